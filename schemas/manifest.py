"""The published tables: manifest (one row per sample), cases (one row per discovered case) and
registration pairs, as typed records. Column names are the records' field names.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Products, in build order.
VERTEBRA, X2CT, DRR, VOLUME = "vertebra", "x2ct", "drr", "volume"
PRODUCTS = (VERTEBRA, X2CT, DRR, VOLUME)
SPLITS = ("train", "val", "test")

QC_ACCEPTED = "accepted"
QC_QUARANTINED = "quarantined"


def sample_id(case_id: str, product: str, tag: str) -> str:
    """`<case>__<product>__<tag>`: the sample's manifest id and HDF5 group name."""
    return f"{case_id}__{product}__{tag}"


def sample_key(sample: str) -> str:
    """The HDF5 group path of a sample."""
    return "/" + sample


def pair_id(fixed_sample_id: str, moving_sample_id: str) -> str:
    return f"{fixed_sample_id}--{moving_sample_id}"


@dataclass
class SampleRow:
    """One row of manifest.parquet."""

    sample_id: str
    product: str
    case_id: str = ""
    split: str = ""
    shard: str | None = None  # file name under shards/ (set when published)
    key: str = ""  # HDF5 group path
    level: str | None = None  # vertebra product
    ref_level: str | None = None  # drr product
    target_level: str | None = None  # drr product
    z_offset_mm: float | None = None  # x2ct product
    n_views: int = 0
    padded_fraction: float | None = None
    cut_by_border: bool | None = None  # vertebra product: the vertebra touches the scan border
    input_sha256: str = ""  # the case's combined input hash
    seed: int = 0


@dataclass
class CaseRow:
    """One row of cases.parquet: a discovered case, accepted or quarantined."""

    case_id: str
    convention: str = ""
    source_paths: str = "{}"  # JSON {role: relative path}
    roles: str = ""  # comma-separated roles present
    file_sha256: str = "{}"  # JSON {role: sha256}
    input_sha256: str = ""  # hash over all files of the case
    shape: str | None = None  # JSON [x, y, z] of the CT as stored
    spacing: str | None = None  # JSON [sx, sy, sz] mm
    orientation: str | None = None  # axis codes of the CT as stored, e.g. LAS
    levels: str | None = None  # comma-separated canonical levels present in the mask
    cut_levels: str | None = None  # levels whose vertebra touches the scan border
    skipped_samples: str | None = None  # JSON list: samples not produced, with the reason
    notes: str | None = None  # JSON list: choices made while reading (e.g. DICOM series not used)
    qc_status: str = ""  # QC_ACCEPTED | QC_QUARANTINED
    qc_reason: str = ""  # reason code (QC_REASONS) or empty
    qc_message: str = ""
    split: str | None = None  # accepted cases: their split

    def quarantine(self, reason: str, message: str) -> None:
        if reason not in QC_REASONS:
            raise ValueError(f"unknown quarantine reason {reason!r}; the reasons are {sorted(QC_REASONS)}")
        self.qc_status, self.qc_reason, self.qc_message = QC_QUARANTINED, reason, message

    def accept(self) -> None:
        self.qc_status, self.qc_reason, self.qc_message = QC_ACCEPTED, "", ""

    @property
    def quarantined(self) -> bool:
        return self.qc_status == QC_QUARANTINED


@dataclass
class PairRow:
    """One row of pairs.parquet: a 3D/3D registration pair of vertebra samples."""

    pair_id: str
    level: str
    split: str
    fixed_sample_id: str
    moving_sample_id: str
    fixed_case_id: str
    moving_case_id: str


def columns(record) -> list[str]:
    return [f.name for f in fields(record)]


def record_dicts(records) -> list[dict]:
    return [asdict(r) for r in records]


MANIFEST_COLUMNS = columns(SampleRow)
CASES_COLUMNS = columns(CaseRow)
PAIRS_COLUMNS = columns(PairRow)


class Col:
    """Column names used in DataFrame code (each is a field of the records above)."""

    SAMPLE_ID, PRODUCT, CASE_ID, SPLIT, SHARD, KEY = "sample_id", "product", "case_id", "split", "shard", "key"
    LEVEL, REF_LEVEL, TARGET_LEVEL, Z_OFFSET_MM = "level", "ref_level", "target_level", "z_offset_mm"
    N_VIEWS, PADDED_FRACTION, INPUT_SHA256 = "n_views", "padded_fraction", "input_sha256"
    LEVELS = "levels"  # cases table: comma-separated levels present
    QC_STATUS, QC_REASON, QC_MESSAGE = "qc_status", "qc_reason", "qc_message"
    FIXED_SAMPLE_ID, MOVING_SAMPLE_ID, PAIR_ID = "fixed_sample_id", "moving_sample_id", "pair_id"


QUARANTINE_COLUMNS = [Col.CASE_ID, Col.QC_REASON, Col.QC_MESSAGE]
# The QC table of the report: every discovered case
QC_TABLE_COLUMNS = [Col.CASE_ID, Col.SPLIT, Col.QC_STATUS, Col.QC_REASON, "levels", "orientation", "spacing"]

# Reason codes for quarantine rows: the names code uses (`QC.UNREADABLE`), and what each means.
class QC:
    UNREADABLE = "unreadable"
    NO_CT_SERIES = "no_ct_series"
    MISSING_SLICES = "missing_slices"
    MIXED_ORIENTATION = "mixed_orientation"
    MISSING_ROLE = "missing_role"
    DEGENERATE_GEOMETRY = "degenerate_geometry"
    IMPLAUSIBLE_SPACING = "implausible_spacing"
    NON_FINITE = "non_finite"
    IMPLAUSIBLE_HU = "implausible_hu"
    GRID_MISMATCH = "grid_mismatch"
    EMPTY_MASK = "empty_mask"
    TOO_FEW_VERTEBRAE = "too_few_vertebrae"
    UNKNOWN_LABELS = "unknown_labels"
    DUPLICATE = "duplicate"
    VERTEBRA_MISMATCH = "vertebra_mismatch"
    LABEL_LOST = "label_lost"
    PROCESSING_ERROR = "processing_error"


QC_REASONS = {
    QC.UNREADABLE: "a file could not be read (missing, truncated or not an image)",
    QC.NO_CT_SERIES: "a DICOM folder holds no CT volume (only localizers/scouts, other modalities, single images)",
    QC.MISSING_SLICES: "a DICOM series with uneven slice positions (missing or repeated slices)",
    QC.MIXED_ORIENTATION: "a DICOM series whose slices have different orientations",
    QC.MISSING_ROLE: "the case lacks a CT or a vertebra mask",
    QC.DEGENERATE_GEOMETRY: "zero/negative spacing or a singular direction matrix",
    QC.IMPLAUSIBLE_SPACING: "voxel spacing outside the configured plausible range",
    QC.NON_FINITE: "the CT holds NaN or infinite voxels",
    QC.IMPLAUSIBLE_HU: "CT intensities outside the configured plausible HU range",
    QC.GRID_MISMATCH: "CT and mask do not overlap physically",
    QC.EMPTY_MASK: "the mask holds no vertebra label",
    QC.TOO_FEW_VERTEBRAE: "fewer vertebrae than qc.min_vertebrae",
    QC.UNKNOWN_LABELS: "the mask holds label ids the label convention does not name",
    QC.DUPLICATE: "the same content appears under another case id",
    QC.VERTEBRA_MISMATCH: "a single-vertebra file lies outside its case's CT",
    QC.LABEL_LOST: "a vertebra label vanished when resampling (thinner than the output voxel)",
    QC.PROCESSING_ERROR: "an unexpected error while processing the case",
}

# Salt of the split draw: changing it reassigns every case to another split.
SPLIT_SEED_STREAM = "split"


def quarantine_entry(row: CaseRow) -> dict:
    """A quarantined case as summaries list it: case id, reason code, message."""
    return {name: getattr(row, name) for name in QUARANTINE_COLUMNS}


def describe_quarantine(entry: dict) -> str:
    return f"{entry[Col.CASE_ID]}: {entry[Col.QC_REASON]} ({entry[Col.QC_MESSAGE]})"

# The manifest fields a loaded sample carries besides its ids, per product.
SAMPLE_ID_COLUMNS = (Col.SAMPLE_ID, Col.CASE_ID, Col.SPLIT)
PRODUCT_COLUMNS = {
    VERTEBRA: (Col.LEVEL, Col.PADDED_FRACTION),
    X2CT: (Col.Z_OFFSET_MM, Col.PADDED_FRACTION),
    DRR: (Col.REF_LEVEL, Col.TARGET_LEVEL),
    VOLUME: (),
}
