"""Content hashes of input files: what build ids, cache keys and duplicate checks are made of."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash of a file, or of a folder (a DICOM series) over its files' names and contents."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{member.relative_to(path).as_posix()}\0{sha256_file(member)}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

def combined_hash(hashes: dict[str, str]) -> str:
    """One hash over a case's files, independent of dict order."""
    text = "\n".join(f"{k}={v}" for k, v in sorted(hashes.items()))
    return hashlib.sha256(text.encode()).hexdigest()
