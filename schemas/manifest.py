"""Column names of the published tables and the file names of a published version."""
from __future__ import annotations

# Files inside <out>/<dataset>/<version>/
DATASET_CARD = "dataset.json"
MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
CASES_PARQUET = "cases.parquet"
CASES_CSV = "cases.csv"
REPORT_HTML = "report.html"
PAIRS_PARQUET = "pairs.parquet"  # 3D/3D registration pairs of vertebra samples
PAIRS_CSV = "pairs.csv"
PAIRS_COLUMNS = ["pair_id", "level", "split", "fixed_sample_id", "moving_sample_id",
                 "fixed_case_id", "moving_case_id"]
SHARD_DIR = "shards"

PRODUCTS = ("vertebra", "x2ct", "drr")
SPLITS = ("train", "val", "test")


def shard_name(product: str, index: int) -> str:
    """The one place that names a shard file."""
    return f"{product}-{index:05d}.h5"


# One row per sample.
MANIFEST_COLUMNS = [
    "sample_id",
    "product",
    "case_id",
    "split",
    "shard",  # file name under shards/
    "key",  # HDF5 group path
    "level",  # vertebra product
    "ref_level",  # drr product
    "target_level",  # drr product
    "z_offset_mm",  # x2ct product
    "n_views",
    "padded_fraction",
    "cut_by_border",  # vertebra product: the vertebra touches the scanned volume's border
    "input_sha256",  # the case's combined input hash
    "seed",
]

# One row per discovered case (accepted or quarantined).
CASES_COLUMNS = [
    "case_id",
    "convention",
    "source_paths",  # JSON {role: relative path}
    "roles",  # comma-separated roles present
    "file_sha256",  # JSON {role: sha256}
    "input_sha256",  # hash over all files of the case
    "shape",  # JSON [x, y, z] of the CT as stored
    "spacing",  # JSON [sx, sy, sz] mm
    "orientation",  # axis codes of the CT as stored, e.g. LAS
    "levels",  # comma-separated canonical levels present in the mask
    "cut_levels",  # levels whose vertebra touches the scan border
    "skipped_samples",  # JSON list: samples not produced, with the reason
    "qc_status",  # accepted | quarantined
    "qc_reason",  # reason code (QC_REASONS) or empty
    "qc_message",
]

QC_ACCEPTED = "accepted"
QC_QUARANTINED = "quarantined"

# Reason codes for quarantine rows.
QC_REASONS = {
    "unreadable": "a file could not be read (missing, truncated or not an image)",
    "missing_role": "the case lacks a CT or a vertebra mask",
    "degenerate_geometry": "zero/negative spacing or a singular direction matrix",
    "implausible_spacing": "voxel spacing outside the configured plausible range",
    "non_finite": "the CT holds NaN or infinite voxels",
    "implausible_hu": "CT intensities outside the configured plausible HU range",
    "grid_mismatch": "CT and mask do not overlap physically",
    "empty_mask": "the mask holds no vertebra label",
    "too_few_vertebrae": "fewer vertebrae than qc.min_vertebrae",
    "unknown_labels": "the mask holds label ids the label convention does not name",
    "duplicate": "the same content appears under another case id",
    "vertebra_mismatch": "a single-vertebra file lies outside its case's CT",
    "label_lost": "a vertebra label vanished when resampling (thinner than the output voxel)",
    "processing_error": "an unexpected error while processing the case",
}
