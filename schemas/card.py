"""dataset.json, the card of a published version, as a typed record."""
from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict

from schemas.config import BuildConfig


def compute_build_id(input_hashes: dict[str, str], config: BuildConfig, code_version: str) -> str:
    """A version's identity: sorted input content hashes, canonical config, code version and seed."""
    payload = json.dumps({"inputs": sorted(input_hashes.values()), "config": config.canonical_json(),
                          "code": code_version, "seed": config.seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class ShardRecord(BaseModel):
    file: str  # path relative to the version folder, e.g. shards/vertebra-<case key>.h5
    product: str
    bytes: int
    n_samples: int
    sha256: str
    members: list[str] = []  # case keys whose samples the shard holds


class ObjectRecord(BaseModel):
    """One file of a version published to an object store: the immutable object holding it."""

    key: str  # object name relative to the dataset prefix: objects/<sha256><suffix>
    sha256: str
    bytes: int


class CaseCounts(BaseModel):
    discovered: int
    accepted: int
    quarantined: int


class Counts(BaseModel):
    samples: int
    by_product: dict[str, int]
    by_product_split: dict[str, dict[str, int]]
    by_level: dict[str, int]
    registration_pairs: int | None = None


class DatasetCard(BaseModel):
    """Everything a reader needs to trust and reproduce a version."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: str
    build_id: str
    schema_version: str
    created: str
    code_version: str
    physics_data: dict[str, str] = {}  # versions of the physics data packages (spekpy, xraylib)
    config: dict  # the full BuildConfig as JSON
    seed: int
    input_hash: str
    inputs: list[str]
    unmatched_files: list[str] = []
    ingest_problems: list[dict] = []
    counts: Counts
    shards: list[ShardRecord]
    cases: CaseCounts
    storage: dict[str, int] = {}  # shard bytes this version linked (shared), copied and newly written
    # In an object store only: every file of the version (path relative to the version, e.g.
    # manifest.parquet, shards/drr-<key>.h5) -> the content-addressed object that holds it.
    objects: dict[str, ObjectRecord] = {}

    def build_config(self) -> BuildConfig:
        return BuildConfig.model_validate(self.config)

    def in_store(self, version: str, objects: dict[str, ObjectRecord]) -> DatasetCard:
        """This card as a store publishes it: under the store's version name, with the objects holding its files."""
        return self.model_copy(update={"version": version, "objects": objects})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, default=str)
