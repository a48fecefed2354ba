"""File and folder names on disk: a published version, the dataset folder around it, ingest and
export outputs. Every name a SpineForge module writes or reads is defined here, once.
"""
from __future__ import annotations

from pathlib import Path

# Inside <out>/<dataset>/<version>/
DATASET_CARD = "dataset.json"
MANIFEST_PARQUET = "manifest.parquet"
MANIFEST_CSV = "manifest.csv"
CASES_PARQUET = "cases.parquet"
CASES_CSV = "cases.csv"
PAIRS_PARQUET = "pairs.parquet"  # 3D/3D registration pairs of vertebra samples
PAIRS_CSV = "pairs.csv"
REPORT_HTML = "report.html"
SHARD_DIR = "shards"

# Inside <out>/<dataset>/, beside the versions
LOCK_FILE = ".lock"  # held (flock) for the length of a build
CACHE_DIR = ".cache"  # per-case results reused across builds
CACHE_CASES = "cases"  # staged per-case sample files: <key>.h5
CACHE_RESULTS = "results"  # Prefect result records: <key>
INPUT_HASHES = "input-hashes.json"  # content hashes of input files by (size, mtime, inode)
STAGING_PREFIX = ".publishing-"  # a version being assembled; renamed into place when complete
TMP_SUFFIX = ".tmp"  # a file being written; renamed into place when complete

# In an object store, under s3://<bucket>/<prefix>/<dataset>/ (docs/object-store.md)
OBJECTS_DIR = "objects"  # immutable objects, named by their content: objects/<sha256><suffix>
REMOTE_WORK_DIR = "spineforge-work"  # `build --out s3://...`: the local work folder under the user cache
STORE_CACHE_DIR = "store"  # loaders' default cache of remote objects under the user cache

# A loader's local cache of remote objects (cache_dir=...)
CACHE_OBJECT_DIR = "objects"  # verified, complete objects: <sha256><suffix>
CACHE_PARTIAL_DIR = "partial"  # downloads under way: <sha256>.part and <sha256>.parts.json (resumable)
CACHE_LOCK_DIR = "locks"  # one lock file per object (one downloader per object per node) + cache.lock
CACHE_DOWNLOAD_LOG = "downloads.jsonl"  # one line per completed download: what this node fetched, when


class DownloadLog:
    """Fields of a download log line: the object's key and bytes, the part it resumed at (0: a fresh
    download) and its part count, the downloading process, and when it started and ended (Unix s)."""

    KEY, BYTES, RESUMED_AT_PART, PARTS, PID, STARTED, TIME = (
        "key", "bytes", "resumed_at_part", "parts", "pid", "started", "time")


DOWNLOAD_LOG_FIELDS = (DownloadLog.KEY, DownloadLog.BYTES, DownloadLog.RESUMED_AT_PART, DownloadLog.PARTS,
                       DownloadLog.PID, DownloadLog.STARTED, DownloadLog.TIME)

# `spineforge ingest --out DIR`
INGEST_SUMMARY = "ingest.json"

# `spineforge export x2ct DIR OUT`: X2CT-GAN's own names
X2CT_SAMPLE_FILE = "ct_xray_data.h5"
X2CT_LIST_SUFFIX = ".txt"  # OUT/train.txt, OUT/test.txt (and val.txt)
EXPORT_RECORD = "export.json"  # OUT/export.json: what the export wrote and how to read it


def case_shard_name(product: str, case_key: str) -> str:
    """A shard holding one case's samples of one product: named by the case's cache key (its content,
    split, sample-shaping config and code), so an unchanged case keeps its shard across versions."""
    return f"{product}-{case_key}.h5"


def pack_shard_name(product: str, member_keys: list[str]) -> str:
    """A compacted shard holding several whole cases: named by its members, so the same members give
    the same shard (reused, not rewritten) in later versions."""
    import hashlib

    digest = hashlib.sha256("\n".join(sorted(member_keys)).encode()).hexdigest()[:16]
    return f"{product}-pack-{digest}.h5"


def shard_path(version_dir: Path, name: str) -> Path:
    return Path(version_dir) / SHARD_DIR / name


def shard_record_file(name: str) -> str:
    """A shard as the card lists it: its path relative to the version folder."""
    return f"{SHARD_DIR}/{name}"


def cache_dir(dataset_dir: Path) -> Path:
    return Path(dataset_dir) / CACHE_DIR


def staged_case_dir(cache: Path, key: str) -> Path:
    """A case's staged samples: one HDF5 file per product, later hard-linked into versions as shards."""
    return Path(cache) / CACHE_CASES / key


def staged_case_file(cache: Path, key: str, product: str) -> Path:
    return staged_case_dir(cache, key) / f"{product}.h5"


def staging_version_dir(dataset_dir: Path, version: str, build_id: str, pid: int) -> Path:
    return Path(dataset_dir) / f"{STAGING_PREFIX}{version}-{build_id[:12]}-{pid}"


def tmp_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def object_name(sha256: str, file: str) -> str:
    """An immutable object's name in the store: its content hash, with the file's suffix for people."""
    suffix = "".join(Path(file).suffixes[-1:])
    return f"{OBJECTS_DIR}/{sha256}{suffix}"


def cache_object_path(cache: Path, key: str) -> Path:
    return Path(cache) / CACHE_OBJECT_DIR / Path(key).name


def cache_partial_paths(cache: Path, key: str) -> tuple[Path, Path]:
    """(the object's bytes so far, the journal of its parts done) of a download under way."""
    name = Path(key).name
    return Path(cache) / CACHE_PARTIAL_DIR / f"{name}.part", Path(cache) / CACHE_PARTIAL_DIR / f"{name}.parts.json"


def cache_lock_path(cache: Path, key: str | None = None) -> Path:
    """The lock of one object's download, or (key None) of the whole cache's size accounting."""
    return Path(cache) / CACHE_LOCK_DIR / f"{Path(key).name if key else 'cache'}{LOCK_FILE}"


def user_cache_dir() -> Path:
    """SpineForge's folder in the user's cache: $XDG_CACHE_HOME/spineforge, else ~/.cache/spineforge."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "spineforge"
