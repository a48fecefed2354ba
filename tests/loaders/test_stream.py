"""The volume product and DRRStream: views rendered in DataLoader workers, deterministic and resumable."""
import json

import numpy as np
import pytest
import torch

from pipelines.loaders import DRRDataset, VertebraDataset, VolumeDataset
from pipelines.loaders.consumers import diffdrr_drr, diffdrr_pose
from pipelines.loaders.stream import DRRStream, case_of

SMALL = {"height": 32, "width": 32, "items_per_epoch": 12, "views_per_case": 3, "xray": {"kv": [80, 80]}}


def _tensors(item):
    return {k: v for k, v in item.items() if isinstance(v, torch.Tensor)}


def _same(a, b):
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta) and a["xray"] == b["xray"]


def test_volume_is_the_resampled_case_with_its_vertebrae(training_version):
    """Each case's volume holds exactly the build's resampled CT and labels; its boxes and centres agree
    with the labels, the vertebra patches are cut from it, and a drr sample's centre is its ref centre."""
    from pipelines.case.prepare import load_and_prepare
    from pipelines.ingest.discover import discover
    from pipelines.ingest.labels import level_id
    from tests.loaders.conftest import N_CASES, training_config

    root, inputs = training_version
    volumes = VolumeDataset(root)
    assert len(volumes) == N_CASES
    cases = {c.case_id: c for c in discover([inputs]).cases}
    patches = VertebraDataset(root)
    drrs = {s["case_id"]: s for s in (DRRDataset(root)[i] for i in range(len(DRRDataset(root))))}
    for v in (volumes[i] for i in range(len(volumes))):
        prepared = load_and_prepare(cases[v["case_id"]], training_config())
        assert v["ct"].dtype == torch.int16 and v["labels"].dtype == torch.uint8
        assert np.array_equal(v["ct"].numpy(), prepared.ct.array)
        assert np.array_equal(v["labels"].numpy(), prepared.labels.array)
        assert np.allclose(v["affine"].numpy(), prepared.ct.affine)
        assert v["level_ids"].tolist() == [level_id(lv) for lv in prepared.levels]
        labels = v["labels"].numpy()
        for lid, (lo, hi), centre in zip(v["level_ids"].tolist(), v["vertebra_boxes"].numpy(),
                                         v["vertebra_centres"].numpy()):
            where = np.argwhere(labels == lid)
            assert (where.min(0) == lo).all() and (where.max(0) + 1 == hi).all()
            world = where.mean(0) @ prepared.ct.affine[:3, :3].T + prepared.ct.affine[:3, 3]
            assert np.allclose(centre, world, atol=1e-9)
        drr = drrs[v["case_id"]]
        ref = v["level_ids"].tolist().index(level_id(drr["ref_level"]))
        assert np.allclose(drr["rotation_center"].numpy(), v["vertebra_centres"][ref].numpy(), atol=1e-9)
        # a vertebra patch is the volume cut at its own affine's offset (where it lies inside)
        patch = next(patches[i] for i in range(len(patches)) if patches.rows[i]["case_id"] == v["case_id"])
        start = np.rint(np.linalg.solve(v["affine"].numpy(), patch["affine"].numpy())[:3, 3]).astype(int)
        lo, hi = np.maximum(start, 0), np.minimum(start + 16, v["ct"].shape)
        inner = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
        assert np.array_equal(patch["ct"].numpy()[inner], v["ct"].numpy()[tuple(slice(a, b) for a, b in zip(lo, hi))])


def test_a_version_without_volumes_is_refused_with_the_fix(tmp_path, training_version):
    from pipelines.builds.run import run_build
    from tests.loaders.conftest import training_config

    _, inputs = training_version
    config = training_config().model_copy(update={"volume": training_config().volume.model_copy(
        update={"enabled": False})})
    run_build(config, [str(inputs)], str(tmp_path))
    with pytest.raises(ValueError, match="no volume product.*volume.enabled: true"):
        DRRStream(tmp_path / "train" / "v1")


def test_the_stream_takes_the_cases_of_its_split_only(training_version):
    root, _ = training_version  # every case of this version is in train
    assert {DRRStream(root, split="train", config=SMALL).item(p)["split"] for p in range(0, 12, 3)} == {"train"}
    with pytest.raises(ValueError, match="no val-split case"):
        DRRStream(root, split="val", config=SMALL)
    with pytest.raises(ValueError, match="split must be one of"):
        DRRStream(root, split="validation", config=SMALL)


@pytest.fixture(scope="module")
def stream(training_version):
    root, _ = training_version
    return DRRStream(root, config=SMALL, seed=3, batch_size=2)


def test_items_carry_views_poses_and_physics_in_the_configured_ranges(stream):
    item = stream.item(0)
    v = 2  # AP and LAT of one pose
    for key in ("drr", "drr_vertebra", "drr_xray"):
        assert item[key].shape == (v, 32, 32) and item[key].dtype == torch.float32
        assert torch.isfinite(item[key]).all()
    assert item["instrument_mask"].shape == (v, 32, 32) and item["instrument_mask"].dtype == torch.uint8
    assert item["instrument_ids"].shape == (v, 32, 32) and item["instrument_ids"].dtype == torch.int32
    assert torch.equal(item["instrument_ids"] > 0, item["instrument_mask"] > 0)
    assert (item["drr"] >= item["drr_vertebra"] - 1e-6).all() and item["drr_vertebra"].amax() > 0
    assert item["pose_params"].shape == (v, 6) and item["pose_matrices"].shape == (v, 4, 4)
    assert item["view_names"] == ["AP", "LAT"]
    rot, trans = np.deg2rad(10.0), 10.0  # the version's drr ranges
    assert (item["pose_params"][:, :3].abs() <= rot).all() and (item["pose_params"][:, 3:].abs() <= trans).all()
    record = json.loads(item["xray"])
    assert record["physics"]["kv"] == 80 and len(record["noise_seeds"]) == v
    levels = ["T11", "T12", "L1", "L2", "L3", "L4"]
    assert levels.index(item["target_level"]) - levels.index(item["ref_level"]) in (-1, 1, 2)


def test_same_seed_and_epoch_give_bit_identical_items_in_any_worker_layout(stream, training_version):
    """Rendered in the main process, by two forked workers, or by a new stream: the same items, bit for
    bit; another epoch draws other poses and physics."""
    root, _ = training_version
    main = list(stream)
    assert len(main) == 12 and [it["position"] for it in main] == list(range(12))
    loader = stream.loader(2, collate_fn=list)
    workers = [it for batch in loader for it in batch]
    assert [it["position"] for it in workers] == list(range(12))
    fresh = DRRStream(root, config=SMALL, seed=3, batch_size=1)
    assert all(_same(a, b) for a, b in zip(main, workers))
    assert all(_same(a, fresh.item(a["position"])) for a in main[:4])
    stream.set_epoch(1)
    try:  # the same loader's next epoch: the workers see the new epoch
        other = [it for batch in loader for it in batch]
    finally:
        stream.set_epoch(0)
    assert [it["epoch"] for it in other] == [1] * 12
    assert all(not torch.equal(a["pose_params"], b["pose_params"]) for a, b in zip(main, other))


def _same_but_noise(a, b):
    """Every tensor equal but the realistic images (their noise is checked apart), the records equal."""
    ta, tb = _tensors(a), _tensors(b)
    return ta.keys() == tb.keys() and a["xray"] == b["xray"] and all(
        torch.equal(ta[k], tb[k]) for k in ta if k != "drr_xray")


def _noiseless(stream, position):
    """The realistic images of a position's item without noise, rendered by `stream` as its items are."""
    import dataclasses

    d = stream._draw(position)
    record = dataclasses.replace(d.xray, noise_seeds=(None,) * len(d.poses))
    return stream.views_of(d.vol.case_id, d.target, d.poses, record).realistic


@pytest.mark.parametrize("crop_mm", [None, 60.0])
def test_a_stream_on_a_device_gives_the_cpu_streams_items(stream, training_version, crop_mm):
    """device='cpu' runs the GPU mode's path (the torch walker, a batch's walks in one pass, the torch
    synthesis, rendered in this process) on the CPU: the items of the numba stream for the same
    positions, across batches that span two cases (views_per_case 3, batch 4) -- the exact images, masks,
    poses and records bit for bit; the realistic images without noise within 1e-5 of the largest
    value; with noise, the same noise model (the noise's spread within 10 % of the CPU's) and the same
    realisation on every run."""
    root, _ = training_version
    config = {**SMALL, "crop_mm": crop_mm}
    cpu = stream if crop_mm is None else DRRStream(root, config=config, seed=3, batch_size=2)
    device = DRRStream(root, config=config, seed=3, batch_size=4, device="cpu")
    assert device._volume(0).whole is None or device._volume(0).whole.renderer.walker == "torch"
    items = list(device)
    assert [it["position"] for it in items] == list(range(12)) and len({it["case_id"] for it in items[:4]}) == 2
    for a in items:
        b = cpu.item(a["position"])
        assert _same_but_noise(a, b)
        clean_a, clean_b = _noiseless(device, a["position"]), _noiseless(cpu, a["position"])
        assert isinstance(clean_a, torch.Tensor) and isinstance(clean_b, np.ndarray)
        np.testing.assert_allclose(clean_a.numpy(), clean_b, rtol=0, atol=1e-5 * np.abs(clean_b).max())
        spread_a, spread_b = (float((x - torch.as_tensor(c)).std()) for x, c in ((a["drr_xray"], clean_a),
                                                                                  (b["drr_xray"], clean_b)))
        assert spread_a == pytest.approx(spread_b, rel=0.1) and spread_b > 0
    batches = list(device.loader(collate_fn=list))  # no workers: the items come from this process
    assert [len(b) for b in batches] == [4, 4, 4] and all(_same(a, b) for a, b in zip(items, sum(batches, [])))
    with pytest.raises(ValueError, match="num_workers must be 0"):
        device.loader(2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            DRRStream(root, config=config, seed=3, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_stream_on_the_gpu_agrees_with_the_cpu_stream(stream, training_version):
    root, _ = training_version
    gpu = DRRStream(root, config=SMALL, seed=3, batch_size=4, device="cuda")
    for a in list(gpu)[:4]:
        b = stream.item(a["position"])
        assert a["drr"].device.type == "cuda" and a["xray"] == b["xray"]
        for key in ("drr", "drr_vertebra"):
            torch.testing.assert_close(a[key].cpu(), b[key], rtol=1e-5, atol=1e-6)
        clean_a, clean_b = _noiseless(gpu, a["position"]), _noiseless(stream, a["position"])
        np.testing.assert_allclose(clean_a.cpu().numpy(), clean_b, rtol=0, atol=1e-5 * np.abs(clean_b).max())
        assert torch.equal(a["instrument_ids"].cpu(), b["instrument_ids"])


def test_runs_of_positions_share_a_case_and_every_case_comes_up(stream):
    n = len(stream.cases)
    order = [case_of(p, n, 3, 0, 3) for p in range(3 * n)]
    assert all(order[p] == order[p - p % 3] for p in range(len(order)))
    assert sorted(order[::3]) == list(range(n))
    assert [case_of(p, n, 3, 1, 3) for p in range(3 * n)] != order  # a fresh order each epoch


def test_worker_memory_is_bounded_by_max_volumes(training_version):
    root, _ = training_version
    ds = DRRStream(root, config={**SMALL, "views_per_case": 1, "max_volumes": 2, "realistic": False})
    held = []
    for item in ds:
        held.append(len(ds._cache))
        assert item["drr"].shape == (2, 32, 32) and "drr_xray" not in item
    assert max(held) == 2 and len(ds.cases) > 2  # more cases came by than the cache holds


def test_state_dict_resumes_mid_epoch_exactly(stream, training_version):
    root, _ = training_version
    loader = stream.loader(2, collate_fn=list)
    before = []
    for n, batch in enumerate(loader):
        if n == 2:
            break
        before += batch
    state = json.loads(json.dumps(stream.state_dict(2 * 2)))
    restarted = DRRStream(root, config=SMALL, seed=3, batch_size=2)
    restarted.load_state_dict(state)
    after = [it for batch in restarted.loader(1, collate_fn=list) for it in batch]
    assert [it["position"] for it in before + after] == list(range(12))
    assert all(_same(a, stream.item(a["position"])) for a in after[:2])
    with pytest.raises(ValueError, match="seed"):
        DRRStream(root, config=SMALL, seed=4).load_state_dict(state)


def test_diffdrr_renders_a_streamed_view_from_the_items_pose(stream):
    """diffdrr's own Siddon, posed by `diffdrr_pose(item, ...)` with the stream's geometry, reproduces a
    streamed exact view; the other view's pose does not."""
    item = stream.item(5)
    volume = stream.volumes[stream.cases[case_of(5, len(stream.cases), 3, 0, 3)]]
    drr = diffdrr_drr(volume["ct"].numpy(), volume["affine"].numpy(), stream.geometry, stream.attenuation)
    errors = []
    for view in range(2):
        image = drr(diffdrr_pose(item, view, stream.geometry))[0, 0].detach().numpy()
        stored = item["drr"][view].numpy()
        other = item["drr"][1 - view].numpy()
        errors.append((np.linalg.norm(image - stored) / np.linalg.norm(stored),
                       np.linalg.norm(image - other) / np.linalg.norm(other)))
    print("diffdrr vs stream (own view, other view):", errors)
    assert all(own < 1e-4 and other > 0.05 for own, other in errors)


def test_cropped_views_are_the_whole_views_of_the_region(training_version):
    """crop_mm renders only a cube around the target vertebra: with a cube that holds the whole column
    the views are the whole-volume views; with a smaller one the target vertebra's own view is unchanged."""
    root, _ = training_version
    exact = {**SMALL, "realistic": False}
    whole = DRRStream(root, config=exact, seed=3)
    big = DRRStream(root, config={**exact, "crop_mm": 400.0}, seed=3)
    small = DRRStream(root, config={**exact, "crop_mm": 60.0}, seed=3)
    for p in (0, 4, 8):
        a, b, c = whole.item(p), big.item(p), small.item(p)
        assert torch.allclose(a["drr"], b["drr"], rtol=1e-4, atol=1e-5)
        assert torch.allclose(a["drr_vertebra"], c["drr_vertebra"], rtol=1e-4, atol=1e-5)
        assert (c["drr"].sum() < a["drr"].sum()) and torch.equal(a["pose_params"], c["pose_params"])
        assert c["affine"][:3, 3].tolist() != a["affine"][:3, 3].tolist()


def test_a_stored_view_re_renders_bit_identically_through_the_streams_path(training_version):
    """One view recipe (`pipelines.physics.render`): every stored drr sample's poses and xray record,
    rendered by the stream at the version's detector, give its stored exact, vertebra-only, realistic
    and instrument-mask images byte for byte."""
    import h5py
    import hdf5plugin  # noqa: F401

    from pipelines.io.shards import PublishedVersion
    from pipelines.physics.draw import XrayRecord
    from pipelines.physics.render import poses_of
    from schemas.shard_layout import Attr, Key

    root, _ = training_version
    version = PublishedVersion(root)
    d = version.config.detector
    stream = DRRStream(root, config={"height": d.height, "width": d.width, "pixel_spacing_mm": d.pixel_spacing_mm})
    rows = version.manifest[version.manifest["product"] == "drr"]
    checked = 0
    for row in rows.itertuples():
        with h5py.File(root / "shards" / row.shard, "r") as h5:
            g = h5[row.key]
            stored = {k: g[k][()] for k in (Key.DRR, Key.DRR_VERTEBRA, Key.DRR_XRAY, Key.INSTRUMENT_MASK,
                                             Key.INSTRUMENT_IDS)}
            poses = poses_of(g[Key.POSE_PARAMS][()], g[Key.POSE_MATRICES][()], g[Key.VIEW_NAMES][()],
                             g[Key.ROTATION_CENTER][()], stream.geometry.sod_mm)
            xray = XrayRecord.from_json(g.attrs[Attr.XRAY])
        views = stream.views_of(row.case_id, row.target_level, poses, xray)
        assert np.array_equal(views.whole, stored[Key.DRR]) and np.array_equal(views.part, stored[Key.DRR_VERTEBRA])
        assert np.array_equal(views.realistic, stored[Key.DRR_XRAY])
        assert np.array_equal(views.instrument_mask, stored[Key.INSTRUMENT_MASK])
        assert np.array_equal(views.instrument_ids, stored[Key.INSTRUMENT_IDS])
        assert stored[Key.DRR_XRAY].std() > 0
        checked += 1
    assert checked == len(rows) > 0
    other = XrayRecord(xray.physics, xray.instruments, tuple(s + 1 for s in xray.noise_seeds))
    assert not np.array_equal(stream.views_of(row.case_id, row.target_level, poses, other).realistic,
                              stored[Key.DRR_XRAY])  # the check can fail: other noise seeds, other images


def test_a_build_renders_its_drr_product_on_a_given_radiographs_detector(tmp_path, training_version):
    """detector.like_radiograph: the version's drr views have the DX's rows and columns (binned 2 x 2),
    its pitch, SDD and SOD, and its config records the numbers and where they came from."""
    from pipelines.builds.run import run_build
    from pipelines.io.shards import PublishedVersion
    from tests.loaders.conftest import training_config
    from tests.loaders.test_radiographs import write_dicom

    _, inputs = training_version
    dx = write_dicom(tmp_path / "dx.dcm", np.zeros((64, 72), np.uint16), "DX", ImagerPixelSpacing=[2.0, 2.0],
                     DistanceSourceToDetector=1000, EstimatedRadiographicMagnificationFactor=1.25, ViewPosition="AP")
    base = training_config().model_dump(mode="json")
    base["detector"] = {"samples_per_voxel": 2.0, "like_radiograph": str(dx), "like_binning": 2}
    from schemas.config import BuildConfig

    run_build(BuildConfig.model_validate(base), [str(inputs)], str(tmp_path / "out"))
    version = PublishedVersion(tmp_path / "out" / "train" / "v1")
    d = version.config.detector
    assert (d.height, d.width, d.pixel_spacing_mm, d.sdd_mm, d.sod_mm) == (32, 36, 4.0, 1000.0, 800.0)
    assert d.from_radiograph == str(dx) and d.like_radiograph is None
    drrs = DRRDataset(tmp_path / "out" / "train" / "v1")
    assert drrs[0]["drr"].shape[-2:] == (32, 36)
    assert (drrs.geometry.height, drrs.geometry.width, drrs.geometry.sod_mm) == (32, 36, 800.0)
