"""The one shard reader: a written group reads back; a missing group or shard is a ShardError."""
import h5py
import numpy as np
import pytest

from pipelines.errors import ShardError
from pipelines.io.shards import atomic_h5, open_shard, read_group, write_sample
from schemas.shard_layout import Attr


def test_written_sample_reads_back_with_its_affine(tmp_path):
    ct = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    with atomic_h5(tmp_path / "s.h5") as h5:
        write_sample(h5, "a__vertebra__L1", {"ct": ct}, {Attr.AFFINE: affine}, "blosc-lz4")
    assert not (tmp_path / "s.h5.tmp").exists()
    with open_shard(tmp_path / "s.h5") as h5:
        got = read_group(h5, "/a__vertebra__L1", ["ct"], "s.h5")
        assert h5["a__vertebra__L1/ct"].fletcher32 and h5["a__vertebra__L1/ct"].chunks == ct.shape
    np.testing.assert_array_equal(got["ct"], ct)
    np.testing.assert_array_equal(got[Attr.AFFINE], affine)
    with open_shard(tmp_path / "s.h5") as h5, pytest.raises(ShardError, match="missing from the shard"):
        read_group(h5, "/other", ["ct"], "s.h5:/other")


def test_a_failed_write_leaves_no_file_and_bad_shards_are_named(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_h5(tmp_path / "x.h5") as h5:
            h5.create_dataset("a", data=[1])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ShardError, match="missing"):
        open_shard(tmp_path / "x.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="bad.h5: not a readable HDF5 shard"):
        open_shard(tmp_path / "bad.h5")
    assert h5py.is_hdf5(tmp_path / "bad.h5") is False
