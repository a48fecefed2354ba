"""The realistic views in published versions: x2ct on request, the xray record checked by validate."""
import json

import h5py
import hdf5plugin  # noqa: F401
import numpy as np

from pipelines.builds.run import run_build
from pipelines.tools.validate import _check_xray_record, validate_version
from schemas.shard_layout import Attr, Key
from tests.conftest import shard_files, write_ctspine_case


def test_x2ct_gets_realistic_views_on_request_and_the_version_validates(tmp_path, tiny_config):
    for i in range(2):
        write_ctspine_case(tmp_path / "in", f"p{i}", noise_seed=i)
    config = tiny_config.model_copy(update={"xray": tiny_config.xray.model_copy(update={"x2ct": True})})
    summary = run_build(config, [str(tmp_path / "in")], str(tmp_path / "out"))
    version = tmp_path / "out" / "tiny" / "v1"
    assert summary.published and validate_version(version) == []
    with h5py.File(shard_files(version, "x2ct")[0], "r") as h5:
        group = next(iter(h5.values()))
        record = json.loads(group.attrs[Attr.XRAY])
        assert len(record["noise_seeds"]) == 2 and record["instruments"] == []
        for exact, real in ((Key.XRAY1, Key.XRAY1_XRAY), (Key.XRAY2, Key.XRAY2_XRAY)):
            a, b = group[exact][()], group[real][()]
            assert a.shape == b.shape and np.isfinite(b).all() and not np.array_equal(a, b)
            open_field = b < 3.0  # collimated pixels see scatter only: -ln of a few quanta in thousands
            assert open_field.sum() > 20
            # the same anatomy through another chain, in the open field
            assert np.corrcoef(a[open_field], b[open_field])[0, 1] > 0.5
    with h5py.File(shard_files(version, "drr")[0], "r") as h5:
        group = next(iter(h5.values()))
        assert group[Key.DRR_XRAY].shape == group[Key.DRR].shape
        assert group[Key.INSTRUMENT_MASK].dtype == np.uint8


def test_validate_names_a_broken_xray_record():
    from pipelines.physics.draw import XrayRecord
    from pipelines.physics.scatter_profiles import physics_for

    good = XrayRecord(physics_for(90), (), (1, 2), "s").to_json()
    assert _check_xray_record("g", good, 2) == []
    stale = json.loads(good)
    stale["physics"].pop("grid_ratio")
    assert "does not parse" in _check_xray_record("g", json.dumps(stale), 2)[0]
    assert "not JSON" in _check_xray_record("g", "{", 2)[0]
    assert "lacks 'noise_seeds'" in _check_xray_record("g", json.dumps({"physics": {}, "instruments": [],
                                                                        "seed_stream": "s"}), 2)[0]
    assert "2 noise seeds for 4 views" in _check_xray_record("g", good, 4)[0]


def test_validate_checks_instrument_ids_against_the_kind_mask_and_the_record(tmp_path):
    from pipelines.physics.draw import XrayRecord
    from pipelines.physics.instruments import Instrument
    from pipelines.physics.scatter_profiles import physics_for
    from pipelines.tools.validate import _check_instrument_ids

    wire = Instrument.rounded(4, [0, 0, 0], [1, 2, 3], 0.8, "ss316l")
    record = XrayRecord(physics_for(90), (wire, wire), (1,), "s").to_json()
    kinds = np.zeros((1, 4, 4), np.uint8)
    kinds[0, 1, 1:3] = 4
    with h5py.File(tmp_path / "g.h5", "w") as h5:
        for name, ids in (("good", [0, 1, 3]), ("elsewhere", [1, 1, 0]), ("unrecorded", [0, 4, 1])):
            g = h5.create_group(name)
            g.attrs[Attr.XRAY] = record
            g[Key.INSTRUMENT_MASK] = kinds
            g[Key.INSTRUMENT_IDS] = np.zeros((1, 4, 4), np.int32)
            g[Key.INSTRUMENT_IDS][0, 1, :3] = ids
        assert _check_instrument_ids("good", h5["good"]) == []
        assert "disagree on where" in _check_instrument_ids("elsewhere", h5["elsewhere"])[0]
        assert "beyond the record's 2 instruments" in _check_instrument_ids("unrecorded", h5["unrecorded"])[0]
