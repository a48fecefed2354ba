"""Tools on published versions: diff, export, report, lineage records, loader failure modes."""
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from torch.utils.data import DataLoader

from pipelines.builds.run import run_build
from pipelines.errors import ShardError
from pipelines.io.version_shards import byte_balanced_groups
from pipelines.loaders import ShuffledSamples, VertebraDataset, X2CTDataset
from pipelines.tools.diff import diff_versions
from pipelines.tools.export import export_x2ct
from tests.conftest import shard_files, write_ctspine_case


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


# Loaded first in the page: collects console errors and uncaught errors, then, once the page has
# loaded, writes what it found (images decoded, QC table rows) into an element --dump-dom prints.
PROBE = """<script>
window.__errors = [];
const realError = console.error;
console.error = (...a) => { window.__errors.push(a.join(' ')); realError(...a); };
window.addEventListener('error', e => window.__errors.push(String(e.message || e.target?.src || e)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({
    images: imgs.length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    qc_rows: [...document.querySelectorAll('#qc-cases tbody tr')].map(r => r.cells[0].textContent),
    errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(two_versions, tmp_path):
    """What a data engineer looks at, in a real browser: every image decodes, the QC table lists every
    case of cases.parquet, and the page logs no error."""
    import json
    import re
    import subprocess

    version = two_versions[0] / "v1"
    page = tmp_path / "report.html"
    page.write_text((version / "report.html").read_text().replace("<head>", "<head>" + PROBE, 1))
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                          check=True, capture_output=True, text=True, timeout=120)
    probe = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S).group(1).replace("&quot;", '"'))
    cases = pd.read_parquet(version / "cases.parquet")
    assert probe["images"] >= 4 and probe["decoded"] == probe["images"]  # histogram + DRR, X2CT, patch sheets
    assert sorted(probe["qc_rows"]) == sorted(cases.case_id)
    assert probe["errors"] == []


def test_the_reports_level_chart_runs_cranio_caudally():
    from pipelines.tools.report import level_bars

    by_level = {"L1": 4, "L2": 3, "L3": 2, "T1": 1, "T10": 5, "T3": 6, "T6": 7}  # as the card stores them
    assert level_bars(by_level) == (["T1", "T3", "T6", "T10", "L1", "L2", "L3"], [1, 6, 7, 5, 4, 3, 2])
