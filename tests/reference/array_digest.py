"""Digests of every array of every sample in a published version, to prove behaviour unchanged.

`python -m tests.reference.array_digest VERSION_DIR > FILE.json` records them; tests compare a
fresh build's digests with a file recorded by an earlier code version.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (shards are Blosc-compressed)
import numpy as np


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()


def version_digests(version_dir: Path) -> dict[str, dict[str, str]]:
    """{sample_id: {dataset key: sha256 of dtype, shape and bytes}} over every shard of a version."""
    out: dict[str, dict[str, str]] = {}
    for shard in sorted((Path(version_dir) / "shards").glob("*.h5")):
        with h5py.File(shard, "r") as h5:
            for sample_id, group in h5.items():
                out[sample_id] = {key: _digest(ds[()]) for key, ds in sorted(group.items())}
    return dict(sorted(out.items()))


if __name__ == "__main__":
    print(json.dumps(version_digests(Path(sys.argv[1])), indent=1, sort_keys=True))
