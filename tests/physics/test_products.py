"""The realistic views in published versions: x2ct on request, the xray record checked by validate."""
import json
import shutil

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
        name = group.name.strip("/")
    # validate reads the stored masks: an id bit where no instrument is, written into a copy, is named
    copy = tmp_path / "copy"
    shutil.copytree(version, copy)
    for f in copy.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    with h5py.File(shard_files(copy, "drr")[0], "r+") as h5:
        ids = h5[name][Key.INSTRUMENT_IDS]
        broken = ids[()]
        broken[0, 0, 0] = 1 - min(broken[0, 0, 0], 1)  # flips whether a corner ray crosses an instrument
        ids[...] = broken
    assert any("disagree on where instruments are" in p for p in validate_version(copy))


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


def test_validate_checks_instrument_ids_against_the_kind_mask_and_the_record():
    from pipelines.physics.draw import XrayRecord
    from pipelines.physics.instruments import Instrument
    from pipelines.physics.scatter_profiles import physics_for
    from pipelines.tools.validate import _check_instrument_ids

    wire = Instrument.rounded(4, [0, 0, 0], [1, 2, 3], 0.8, "ss316l")
    record = XrayRecord(physics_for(90), (wire, wire), (1,), "s").to_json()
    kinds = np.zeros((1, 4, 4), np.uint8)
    kinds[0, 1, 1:3] = 4
    cases = {"good": [0, 1, 3], "elsewhere": [1, 1, 0], "unrecorded": [0, 4, 1]}
    found = {}
    for name, row in cases.items():
        ids = np.zeros((1, 4, 4), np.int32)
        ids[0, 1, :3] = row
        found[name] = _check_instrument_ids(name, ids, kinds, record)
    assert found["good"] == []
    assert "disagree on where" in found["elsewhere"][0]
    assert "beyond the record's 2 instruments" in found["unrecorded"][0]
