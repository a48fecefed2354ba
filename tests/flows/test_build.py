"""Whole builds on a tiny synthetic collection: publish, no-op, refusal, validate, loaders."""
import json

import h5py
import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from pipelines.builds.run import run_build
from pipelines.errors import BuildError, PublishError
from pipelines.loaders import DRRDataset, VertebraDataset, X2CTDataset, open_dataset
from pipelines.tools.validate import validate_version
from tests.conftest import shard_files, write_ctspine_case


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = tmp_path_factory.mktemp("collection")
    for n, case in enumerate(("p001", "p002", "p003")):
        write_ctspine_case(root, case, noise_seed=n, spacing=(1.2, 1.2, 2.0))
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b garbage")
    write_ctspine_case(root / "sub", "broken")  # only the mask is used; the CT above is the one matched first
    (root / "sub" / "broken.nii.gz").unlink()
    return root


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory):
    from schemas.config import BuildConfig

    config = BuildConfig.model_validate({
        "dataset": "tiny", "vertebra": {"size": 24, "levels": ["L1", "L2", "L3"]},
        "x2ct": {"size": 32, "z_offsets_mm": [-10, 0, 10]}, "drr": {"pairs_per_case": 2, "poses_per_pair": 1},
        "detector": {"height": 24, "width": 24, "pixel_spacing_mm": 8.0},
        "splits": {"train": 0.5, "val": 0.25, "test": 0.25}})
    out = tmp_path_factory.mktemp("out")
    summary = run_build(config, [str(collection)], str(out))
    return config, out, summary


def test_publishes_the_design_layout(built):
    config, out, summary = built
    vdir = out / "tiny" / "v1"
    assert summary.published and summary.version == "v1" and summary.version_dir == str(vdir)
    for name in ("dataset.json", "manifest.parquet", "manifest.csv", "cases.parquet", "cases.csv", "report.html"):
        assert (vdir / name).is_file(), name
    # shards hold whole cases: one per accepted case and product, named by the case's cache key
    card = json.loads((vdir / "dataset.json").read_text())
    names = sorted(p.name for p in (vdir / "shards").iterdir())
    assert len(names) == 12 and {n.split("-")[0] for n in names} == {"drr", "vertebra", "x2ct", "volume"}
    assert all(len(s["members"]) == 1 and s["file"] == f"shards/{s['product']}-{s['members'][0]}.h5"
               for s in card["shards"])
    assert card["build_id"] == summary.build_id and card["schema_version"] == "1.1"
    assert card["counts"]["by_product"] == {"drr": 6, "vertebra": 9, "x2ct": 9, "volume": 3}
    assert card["cases"] == {"discovered": 4, "accepted": 3, "quarantined": 1}
    hidden = sorted(p.name for p in (out / "tiny").glob(".*"))
    assert hidden == [".cache", ".lock"], "no half-published folder may remain"  # cache + lock persist
    assert not list((out / "tiny" / ".cache").rglob("*.tmp"))


def test_quarantined_case_is_a_row_with_a_reason(built):
    _, out, summary = built
    cases = pd.read_parquet(out / "tiny" / "v1" / "cases.parquet").set_index("case_id")
    assert cases.loc["broken", "qc_status"] == "quarantined"
    assert cases.loc["broken", "qc_reason"] == "unreadable"
    assert "broken.nii.gz" in cases.loc["broken", "qc_message"]
    assert set(cases.loc[["p001", "p002", "p003"], "qc_status"]) == {"accepted"}
    assert summary.quarantined[0]["case_id"] == "broken"


def test_manifest_rows_match_shards_and_splits_follow_cases(built):
    _, out, _ = built
    vdir = out / "tiny" / "v1"
    manifest = pd.read_parquet(vdir / "manifest.parquet")
    assert manifest.groupby("case_id")["split"].nunique().max() == 1  # a case never spans splits
    for row in manifest.itertuples():
        with h5py.File(vdir / "shards" / row.shard, "r") as h5:
            g = h5[row.key]
            assert g.attrs["case_id"] == row.case_id and g.attrs["split"] == row.split
    drr = manifest[manifest["product"] == "drr"]
    assert drr["ref_level"].notna().all() and (drr["n_views"] == 2).all()


def test_validate_passes_then_catches_a_flipped_byte(built, tmp_path):
    import shutil

    _, out, _ = built
    assert validate_version(out / "tiny" / "v1") == []
    copy = tmp_path / "v1"
    shutil.copytree(out / "tiny" / "v1", copy)
    shard = shard_files(copy, "vertebra")[0]
    shard.chmod(0o644)  # published shards are read-only
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    problems = validate_version(copy)
    assert any(shard.name in p and "sha256" in p for p in problems)


def test_same_build_again_is_a_noop_and_a_clashing_version_is_refused(built, collection):
    config, out, first = built
    again = run_build(config, [str(collection)], str(out))
    assert not again.published and again.version == "v1" and again.build_id == first.build_id
    other = config.model_copy(update={"seed": config.seed + 1})
    with pytest.raises(PublishError, match="already published"):
        run_build(other, [str(collection)], str(out), version="v1")


def test_no_accepted_case_is_an_error_and_publishes_nothing(tmp_path, tiny_config):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.nii.gz").write_bytes(b"junk")
    with pytest.raises(BuildError, match="no samples to publish.*x"):
        run_build(tiny_config, [str(tmp_path / "in")], str(tmp_path / "out"))
    assert not (tmp_path / "out" / "tiny" / "v1").exists()


@pytest.mark.parametrize("cls,keys", [
    (VertebraDataset, {"ct": (24, 24, 24), "mask": (24, 24, 24), "labels": (24, 24, 24)}),
    (X2CTDataset, {"ct": (32, 32, 32), "xray1": (24, 24), "xray2": (24, 24)}),
    (DRRDataset, {"drr": (2, 24, 24), "drr_vertebra": (2, 24, 24), "pose_params": (2, 6), "pose_matrices": (2, 4, 4)}),
])
def test_loaders_iterate_every_sample_with_two_workers(built, cls, keys):
    """Spawned workers here (this process runs Prefect's machinery); the fork default is
    exercised in a clean trainer process by the end-to-end demo test."""
    _, out, _ = built
    ds = cls(out / "tiny" / "v1")
    ds[0]  # open a handle in the parent first: it must not travel to the workers
    seen = []
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=True, multiprocessing_context="spawn",
                        persistent_workers=True)
    for batch in loader:
        for key, shape in keys.items():
            assert tuple(batch[key].shape[1:]) == shape
        seen += batch["sample_id"]
    assert sorted(seen) == sorted(r["sample_id"] for r in ds.rows) and len(seen) == len(ds)


def test_loader_filters_by_split(built):
    _, out, _ = built
    vdir = out / "tiny" / "v1"
    manifest = pd.read_parquet(vdir / "manifest.parquet")
    for split in ("train", "val", "test"):
        ds = open_dataset(vdir, "vertebra", split=split)
        assert len(ds) == int(((manifest["product"] == "vertebra") & (manifest["split"] == split)).sum())
        assert all(ds[i]["split"] == split for i in range(len(ds)))
    with pytest.raises(ValueError, match="split"):
        open_dataset(vdir, "vertebra", split="training")


def test_stored_drr_pose_is_consistent(built):
    """The stored matrix is T(c)[R|t]T(-c) of the stored parameters and centre."""
    from pipelines.ops.sampling import pose_to_matrix

    _, out, _ = built
    sample = DRRDataset(out / "tiny" / "v1")[0]
    for params, matrix in zip(sample["pose_params"].numpy(), sample["pose_matrices"].numpy()):
        np.testing.assert_allclose(pose_to_matrix(params, sample["rotation_center"].numpy(), "ZXY"), matrix, atol=1e-9)
    assert sample["drr_vertebra"].max() > 0
    assert bool((sample["drr_vertebra"] <= sample["drr"] + 1e-4).all())


def test_stored_views_re_render_from_stored_inputs(built, collection):
    """x2ct: from the stored patch; drr: from the case's 1 mm volume, stored poses and geometry."""
    import json as _json

    from pipelines.case.prepare import load_and_prepare
    from pipelines.ingest.discover import discover
    from pipelines.ops.attenuation import hu_to_mu
    from pipelines.ops.camera import base_camera, camera_for_motion
    from pipelines.ops.drr import Renderer
    from schemas.detector import Geometry

    config, out, _ = built
    vdir = out / "tiny" / "v1"
    manifest = pd.read_parquet(vdir / "manifest.parquet")
    with h5py.File(shard_files(vdir, "x2ct")[0], "r") as h5:
        g = h5[manifest[manifest["product"] == "x2ct"].iloc[0]["key"]]
        geometry = Geometry.from_record(_json.loads(g.attrs["detector"]))
        att = _json.loads(g.attrs["attenuation"])
        mu = hu_to_mu(g["ct"][()], att["mu_water_per_mm"], att["bone_threshold_hu"], att["bone_multiplier"])
        cams = np.stack([base_camera(v, geometry.sod_mm, g.attrs["isocenter"]) for v in ("AP", "LAT")])
        again = Renderer(mu, g.attrs["affine"], geometry).render(cams)
        np.testing.assert_allclose(again[0], g["xray1"][()], atol=1e-6)
        np.testing.assert_allclose(again[1], g["xray2"][()], atol=1e-6)

    row = manifest[manifest["product"] == "drr"].iloc[0]
    case = next(c for c in discover([collection]).cases if c.case_id == row["case_id"])
    prepared = load_and_prepare(case, config)
    with h5py.File(vdir / "shards" / row["shard"], "r") as h5:
        g = h5[row["key"]]
        geometry = Geometry.from_record(_json.loads(g.attrs["detector"]))
        att = _json.loads(g.attrs["attenuation"])
        mu = hu_to_mu(prepared.ct.array, att["mu_water_per_mm"], att["bone_threshold_hu"], att["bone_multiplier"])
        cams = np.stack([camera_for_motion(name.decode(), geometry.sod_mm, g["rotation_center"][()], m)
                         for name, m in zip(g["view_names"][()], g["pose_matrices"][()])])
        np.testing.assert_allclose(Renderer(mu, prepared.ct.affine, geometry).render(cams), g["drr"][()], atol=1e-6)
