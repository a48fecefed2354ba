"""Tools on published versions: diff, export, report, lineage records, loader failure modes."""
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from pipelines.tools.diff import diff_versions
from pipelines.tools.export import export_x2ct
from pipelines.flows import run_build
from tests.conftest import shard_files
from pipelines.io.version_shards import byte_balanced_groups
from pipelines.errors import ShardError
from pipelines.loaders import ShuffledSamples, VertebraDataset, X2CTDataset
from tests.conftest import write_ctspine_case


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    from schemas.config import BuildConfig

    root = tmp_path_factory.mktemp("coll")
    for n, case in enumerate(("p1", "p2", "p3")):
        write_ctspine_case(root, case, noise_seed=n)
    config = BuildConfig.model_validate({
        "dataset": "tools", "vertebra": {"size": 24, "levels": ["L1", "L2"]},
        "x2ct": {"size": 32, "z_offsets_mm": [0]}, "drr": {"pairs_per_case": 1, "poses_per_pair": 1},
        "detector": {"height": 16, "width": 16, "pixel_spacing_mm": 12.0},
        "splits": {"train": 0.5, "val": 0.0, "test": 0.5}})
    out = tmp_path_factory.mktemp("out")
    records = tmp_path_factory.mktemp("manifests")
    v1 = run_build(config, [str(root)], str(out), manifests_dir=str(records))
    # v2: p3 removed, p2 changed, p4 added, and a config change
    (root / "p3.nii.gz").unlink()
    (root / "p3_seg.nii.gz").unlink()
    write_ctspine_case(root, "p2", noise_seed=20)
    write_ctspine_case(root, "p4", noise_seed=4)
    v2 = run_build(config.model_copy(update={"seed": 1}), [str(root)], str(out))
    return out / "tools", v1, v2, records


def test_lineage_record_is_written_for_git(two_versions):
    base, v1, _, records = two_versions
    card = json.loads((records / "tools" / "v1" / "dataset.json").read_text())
    assert card["build_id"] == v1.build_id
    assert (records / "tools" / "v1" / "manifest.csv").read_text() == (base / "v1" / "manifest.csv").read_text()


def test_diff_names_cases_config_and_counts(two_versions):
    base, v1, v2, _ = two_versions
    assert v2.version == "v2"
    d = diff_versions(base / "v1", base / "v2")
    assert d["cases_added"] == ["p4"] and d["cases_removed"] == ["p3"] and d["cases_changed"] == ["p2"]
    assert d["config_changes"] == {"seed": {"a": 0, "b": 1}}
    assert not d["same_build"]
    assert "cases added: 1  (p4)" in d["text"]
    same = diff_versions(base / "v1", base / "v1")
    assert same["same_build"] and not same["config_changes"] and not same["count_changes"]


def test_export_x2ct_writes_the_x2ctgan_layout(two_versions, tmp_path):
    base, *_ = two_versions
    result = export_x2ct(base / "v1", tmp_path / "x2ct")
    manifest = pd.read_parquet(base / "v1" / "manifest.parquet")
    x2ct = manifest[manifest["product"] == "x2ct"]
    listed = []
    for split in ("train", "test"):
        names = (tmp_path / "x2ct" / f"{split}.txt").read_text().split()
        assert sorted(names) == sorted(x2ct[x2ct["split"] == split]["sample_id"])
        listed += names
    assert result["samples"] == len(listed) == len(x2ct)
    with h5py.File(tmp_path / "x2ct" / listed[0] / "ct_xray_data.h5", "r") as h5:
        assert set(h5) == {"ct", "xray1", "xray2", "spacing"}
        assert h5["ct"].shape == (32, 32, 32) and h5["xray1"].shape == (32, 32)  # X-rays on the CT's grid
        assert h5["ct"].dtype == np.uint16 and h5["xray1"].dtype == np.uint8
    assert json.loads((tmp_path / "x2ct" / "export.json").read_text())["source"]["version"] == "v1"


def test_packs_are_planned_by_bytes_and_minimum_count():
    assert byte_balanced_groups([10] * 5, 1000, 2) == [[0, 1, 2], [3, 4]]  # 2 packs although bytes fit one
    assert byte_balanced_groups([10] * 5, 20, 1) == [[0, 1], [2, 3], [4]]  # ceil(50 / 20) = 3
    assert byte_balanced_groups([10], 1, 4) == [[0]]  # never more packs than cases
    assert byte_balanced_groups([], 10, 2) == []


def _copy(base, tmp_path):
    target = tmp_path / "v1"
    shutil.copytree(base / "v1", target)
    return target


def test_loader_refuses_an_unknown_schema_version(two_versions, tmp_path):
    vdir = _copy(two_versions[0], tmp_path)
    card = json.loads((vdir / "dataset.json").read_text())
    card["schema_version"] = "99"
    (vdir / "dataset.json").write_text(json.dumps(card))
    with pytest.raises(ShardError, match="dataset.json.*schema_version '99'"):
        VertebraDataset(vdir)


def test_loader_names_a_missing_shard(two_versions, tmp_path):
    vdir = _copy(two_versions[0], tmp_path)
    missing = shard_files(vdir, "vertebra")[-1]
    missing.unlink()
    with pytest.raises(ShardError, match=f"{missing.name}: shard file is missing"):
        VertebraDataset(vdir)


def test_loader_names_a_truncated_shard(two_versions, tmp_path):
    vdir = _copy(two_versions[0], tmp_path)
    shard = vdir / "shards" / VertebraDataset(vdir).rows[0]["shard"]
    shard.chmod(0o644)  # published shards are read-only
    shard.write_bytes(shard.read_bytes()[:1000])
    ds = VertebraDataset(vdir)
    with pytest.raises(ShardError, match=shard.name):
        ds[0]
    with pytest.raises(ShardError, match="sha256 differs"):
        VertebraDataset(vdir, verify_checksums=True)


def test_loader_catches_a_flipped_data_byte_and_a_manifest_mismatch(two_versions, tmp_path):
    vdir = _copy(two_versions[0], tmp_path)
    ds = VertebraDataset(vdir)
    row = ds.rows[0]
    shard = vdir / "shards" / row["shard"]
    with h5py.File(shard, "r") as h5:
        offset = h5[row["key"]]["ct"].id.get_chunk_info(0).byte_offset
    data = bytearray(shard.read_bytes())
    data[offset + 10] ^= 0xFF
    shard.chmod(0o644)
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=f"{row['shard']}:{row['key']}: corrupt"):
        VertebraDataset(vdir)[0]
    manifest = pd.read_parquet(vdir / "manifest.parquet")
    manifest.loc[manifest["product"] == "x2ct", "key"] = "/not-there"
    manifest.to_parquet(vdir / "manifest.parquet")
    with pytest.raises(ShardError, match="missing from the shard"):
        X2CTDataset(vdir)[0]


def test_shuffled_iteration_is_seeded_and_splits_work_between_workers(two_versions):
    ds = VertebraDataset(two_versions[0] / "v2")
    shuffled = ShuffledSamples(ds, seed=5)
    ids = lambda: [s for b in DataLoader(shuffled, batch_size=1, num_workers=2,  # noqa: E731
                                         multiprocessing_context="spawn") for s in b["sample_id"]]
    first = ids()
    assert sorted(first) == sorted(r["sample_id"] for r in ds.rows)  # every sample exactly once
    assert list(shuffled.order()) == list(ShuffledSamples(ds, seed=5).order())
    shuffled.set_epoch(1)
    assert list(shuffled.order()) != list(ShuffledSamples(ds, seed=5).order())
    assert sorted(ids()) == sorted(first)
    ranks = [set(map(int, ShuffledSamples(ds, seed=5, rank=r, world_size=2).order()[r::2])) for r in (0, 1)]
    assert not ranks[0] & ranks[1] and len(ranks[0] | ranks[1]) == len(ds)


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(two_versions, tmp_path):
    import subprocess

    from PIL import Image

    report = two_versions[0] / "v1" / "report.html"
    html = report.read_text()
    assert html.count("data:image/png;base64,") >= 4  # level histogram + DRR, X2CT and patch sheets
    assert "Quarantined cases (0)" in html
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    assert pixels.std() > 20  # images and tables drawn, not a blank page
