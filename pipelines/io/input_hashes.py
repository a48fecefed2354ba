"""Content hashes of input files, remembered by (size, mtime, inode) so unchanged files are not re-read.

The same rule git, rsync and make use: a file whose size, modification time and inode are what
they were when it was hashed still has that hash, so a re-run over an unchanged collection reads no
voxels to know that it is unchanged. A file whose signature is new (new, changed, touched, copied,
restored) is hashed again: what it holds, not where it lies or when it was touched, decides what is
recomputed. The record lives in the dataset's cache folder and is replaced atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.io.hashing import sha256_file
from schemas.layout import INPUT_HASHES, tmp_path


def file_signature(path: Path) -> list[int]:
    """(size, mtime in ns, inode) of a file; of a folder (a DICOM series): over its files."""
    path = Path(path)
    if path.is_dir():
        members = sorted(p for p in path.rglob("*") if p.is_file())
        stats = [p.stat() for p in members]
        listing = "\n".join(f"{p.relative_to(path).as_posix()}\0{s.st_ino}\0{s.st_mtime_ns}"
                             for p, s in zip(members, stats))
        # a digest, not hash(): Python's string hash differs between processes
        return [sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0),
                int(hashlib.sha256(listing.encode()).hexdigest()[:15], 16)]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class InputHashes:
    """A {absolute path: (signature, sha256)} record kept in `<cache>/input-hashes.json`."""

    def __init__(self, cache_dir: Path | None):
        self.path = Path(cache_dir) / INPUT_HASHES if cache_dir is not None else None
        self.known: dict[str, list] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.known = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.known = {}  # a damaged record only costs re-hashing
        self.used: dict[str, list] = {}
        self.hashed = 0  # files read to hash them in this build

    def sha256(self, path: Path) -> str:
        """The file's content hash: remembered when unchanged, else read and hashed now."""
        known = self.lookup(path)
        if known is not None:
            return known
        sha = sha256_file(path)
        self.hashed += 1
        self.remember(path, sha)
        return sha

    def hash_all(self, paths: list[Path], threads: int | None = None) -> None:
        """Hash `paths` now, on threads (hashlib releases the GIL while it hashes), and remember them."""
        if not paths:
            return
        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            for path, sha in zip(paths, pool.map(sha256_file, paths)):
                self.hashed += 1
                self.remember(path, sha)

    def lookup(self, path: Path) -> str | None:
        """The remembered hash of an unchanged file, or None (the file is new or changed): reads nothing."""
        key = str(Path(path).resolve())
        entry = self.known.get(key)
        if entry is None or entry[0] != file_signature(path):
            return None
        self.used[key] = entry
        return entry[1]

    def remember(self, path: Path, sha256: str) -> None:
        """Record a file's hash, as of its signature now."""
        key = str(Path(path).resolve())
        self.known[key] = self.used[key] = [file_signature(path), sha256]

    def save(self) -> None:
        """Keep the entries this build used (call under the dataset lock)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(self.path)
        tmp.write_text(json.dumps(self.used, sort_keys=True))
        os.replace(tmp, self.path)
