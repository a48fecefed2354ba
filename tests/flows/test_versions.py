"""Versions cost what changed: unchanged cases keep their shard files (hard links, no copies), packs
are written only on request and reused, and gc frees only what no kept version uses."""
import json
import os
from pathlib import Path

from pipelines.builds.run import run_build
from pipelines.io.retention import gc_versions
from pipelines.tools.validate import validate_version
from tests.conftest import write_ctspine_case
from tests.flows.test_orchestration import assert_same_content, small_config


def shards(vdir: Path) -> dict[str, Path]:
    return {p.name: p for p in (vdir / "shards").iterdir()}


def card(vdir: Path) -> dict:
    return json.loads((vdir / "dataset.json").read_text())


def inodes(*folders: Path) -> dict[tuple, int]:
    return {(p.stat().st_dev, p.stat().st_ino): p.stat().st_size
            for folder in folders for p in folder.rglob("*") if p.is_file()}


def test_a_new_case_adds_its_shards_and_shares_every_other_one(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        write_ctspine_case(inputs, f"c{i}", noise_seed=i)
    v1 = Path(run_build(small_config(), [str(inputs)], str(out)).version_dir)
    write_ctspine_case(inputs, "c2", noise_seed=2)
    v2 = Path(run_build(small_config(), [str(inputs)], str(out)).version_dir)
    s1, s2 = shards(v1), shards(v2)
    assert set(s1) < set(s2) and len(s2) - len(s1) == 4  # the new case's shard of each product
    assert all(os.path.samefile(s1[name], s2[name]) for name in s1)  # the same files, not copies
    new = inodes(v2 / "shards").keys() - inodes(v1 / "shards").keys()
    assert len(new) == 4 and all("c2-" in name for name in set(s2) - set(s1))
    assert card(v2)["storage"] == {"linked": sum(p.stat().st_size for p in s2.values()), "copied": 0, "written": 0}
    assert all(not (os.stat(p).st_mode & 0o222) for p in s2.values())  # shared files are read-only
    assert validate_version(v1) == [] and validate_version(v2) == []
    # the same cases rebuilt from scratch give the same samples
    fresh = Path(run_build(small_config(), [str(inputs)], str(tmp_path / "fresh")).version_dir)
    assert_same_content(v2, fresh)


def test_compaction_packs_on_request_and_later_versions_reuse_the_packs(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(4):
        write_ctspine_case(inputs, f"c{i}", noise_seed=i)
    config = small_config(shards={"target_bytes": 10**9, "min_shards": 2})
    v1 = Path(run_build(config, [str(inputs)], str(out), compact=True).version_dir)
    packs = {s["file"]: s["members"] for s in card(v1)["shards"]}
    assert len(packs) == 8 and all("-pack-" in f for f in packs)  # min_shards=2 packs per product
    for product in ("drr", "vertebra", "x2ct", "volume"):  # every case in exactly one pack of each product
        members = sorted(k for f, m in packs.items() if f.startswith(f"shards/{product}-") for k in m)
        assert [k.split("-")[0] for k in members] == ["c0", "c1", "c2", "c3"]
    assert card(v1)["storage"]["written"] > 0 and validate_version(v1) == []
    write_ctspine_case(inputs, "c4", noise_seed=4)
    v2 = Path(run_build(config, [str(inputs)], str(out)).version_dir)
    s1, s2 = shards(v1), shards(v2)
    assert set(s1) < set(s2) and all(os.path.samefile(s1[n], s2[n]) for n in s1)  # packs reused as they are
    assert len(set(s2) - set(s1)) == 4 and card(v2)["storage"]["written"] == 0  # c4 stays loose until asked
    assert validate_version(v2) == []
    (inputs / "c0.nii.gz").unlink()  # a case goes: the packs holding it are not reused...
    (inputs / "c0_seg.nii.gz").unlink()
    v3 = Path(run_build(config, [str(inputs)], str(out)).version_dir)
    kept = [s for s in card(v3)["shards"] if "-pack-" in s["file"]]
    assert kept and all("c0-" not in " ".join(s["members"]) for s in kept)
    assert all(os.path.samefile(v3 / s["file"], v2 / s["file"]) for s in kept)
    assert len(kept) >= 4  # per product, a pack without c0 is kept
    assert validate_version(v3) == []  # ...and its pack partners are served by their own staged shards


def test_gc_removes_old_versions_frees_only_their_own_bytes_and_never_breaks_a_kept_one(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        write_ctspine_case(inputs, f"c{i}", noise_seed=i)
    run_build(small_config(), [str(inputs)], str(out))
    write_ctspine_case(inputs, "c1", noise_seed=11)  # c1 changes
    run_build(small_config(), [str(inputs)], str(out))
    write_ctspine_case(inputs, "c2", noise_seed=2)  # c2 arrives
    run_build(small_config(), [str(inputs)], str(out))
    dataset = out / "orch"
    kept_and_cache = inodes(dataset / "v3", dataset / ".cache")
    expected = sum(size for inode, size in inodes(dataset / "v1", dataset / "v2").items()
                   if inode not in kept_and_cache)
    result = gc_versions(dataset, keep=1)
    assert result.removed == ["v1", "v2"] and result.kept == ["v3"]
    assert result.freed_bytes == expected > 0
    assert not (dataset / "v1").exists() and validate_version(dataset / "v3") == []
    v4 = run_build(small_config(), [str(inputs)], str(out))  # unchanged: still published as v3
    assert not v4.published and v4.version == "v3"
