"""HDF5 sample groups: written per case into a staging file, then gathered into product shards.

Every dataset is one chunk per volume or per view, with fletcher32 checksums and the configured
compression. Files are written under a temporary name and renamed once complete.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import h5py
import hdf5plugin  # registers the Blosc/Zstd HDF5 filters for writers and every reader
import numpy as np

from schemas import SCHEMA_VERSION


def _compression(name: str) -> dict:
    """h5py keyword arguments for a compression name (choice measured in benchmarks/read.py)."""
    if name == "blosc-lz4":  # byte shuffle + LZ4: fast to decode, ~3.4x on CT patches
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if name == "zstd":
        return dict(hdf5plugin.Zstd(clevel=3))
    if name == "none":
        return {}
    return {"compression": name}  # lzf, gzip: built into h5py


def _chunks(array: np.ndarray, per_view: bool) -> tuple:
    """One chunk per view for (V, H, W) stacks, else one chunk per array."""
    return (1, *array.shape[1:]) if per_view else array.shape


def _attr_value(value):
    if isinstance(value, (dict, list)) and not (
        isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value)
    ):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return ""
    return value


def write_sample(h5: h5py.File, sample_id: str, datasets: dict[str, np.ndarray],
                 attrs: dict, compression: str, view_stacks: tuple[str, ...] = ()) -> None:
    """Write one sample group: datasets (arrays) and attributes (JSON-encoded when structured).

    Keys in `view_stacks` are (V, H, W) stacks chunked one view at a time.
    """
    group = h5.create_group(sample_id)
    group.attrs["schema_version"] = SCHEMA_VERSION
    for key, value in attrs.items():
        group.attrs[key] = _attr_value(value)
    for key, array in datasets.items():
        array = np.asarray(array)
        if array.ndim == 0 or array.dtype.kind == "S" or array.size < 64:
            group.create_dataset(key, data=array)
        else:
            group.create_dataset(key, data=array, chunks=_chunks(array, key in view_stacks), fletcher32=True,
                                 **_compression(compression))


@contextmanager
def atomic_h5(path: Path) -> Iterator[h5py.File]:
    """Open `path` for writing under a temporary name; rename into place only on success."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    h5 = h5py.File(tmp, "w")
    try:
        yield h5
    except BaseException:
        h5.close()
        tmp.unlink(missing_ok=True)
        raise
    h5.close()
    os.replace(tmp, path)


def copy_groups(source: Path, keys: list[str], target: h5py.File) -> None:
    """Copy sample groups verbatim (chunks, filters, attributes) from a staging file."""
    with h5py.File(source, "r") as src:
        for key in keys:
            src.copy(src[key], target, name=key)


def group_nbytes(path: Path, key: str) -> int:
    """Uncompressed size of a sample group's datasets."""
    with h5py.File(path, "r") as h5:
        return sum(ds.size * ds.dtype.itemsize for ds in h5[key].values())


class ShardError(Exception):
    """A shard that is missing, unreadable, corrupt or disagrees with the manifest (names the file)."""
