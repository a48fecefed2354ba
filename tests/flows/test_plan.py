"""One build decision, made from content: touched, copied and re-mounted inputs recompute nothing."""
import os
import shutil
import time

import pandas as pd

from pipelines.builds.plan import plan_build
from pipelines.builds.run import run_build
from tests.conftest import write_ctspine_case
from tests.flows.test_orchestration import collection, small_config


def _shard_inodes(version_dir, case_ids) -> dict[tuple[str, str], int]:
    """(case, shard) -> inode of the shard file each sample of these cases is read from."""
    manifest = pd.read_parquet(version_dir / "manifest.parquet")
    rows = manifest[manifest.case_id.isin(case_ids)]
    return {(r.case_id, r.shard): os.stat(version_dir / "shards" / r.shard).st_ino for r in rows.itertuples()}


def test_touching_every_input_recomputes_nothing_and_publishes_nothing(tmp_path):
    inputs, out = collection(tmp_path / "in", n=2), tmp_path / "out"
    first = run_build(small_config(), [str(inputs)], str(out))
    assert first.published and first.files_hashed == 4
    later = time.time() + 100
    for path in inputs.iterdir():
        os.utime(path, (later, later))  # content unchanged, every signature new
    plan = plan_build(small_config(), [str(inputs)], str(out))
    assert plan.noop and plan.build_id == first.build_id and plan.hashes.hashed == 4  # re-hashed, by content
    again = run_build(small_config(), [str(inputs)], str(out))
    assert not again.published and again.version == "v1" and again.files_hashed == 0  # the new signatures are kept
    assert sorted(p.name for p in (out / "orch").iterdir() if not p.name.startswith(".")) == ["v1"]


def test_a_copied_input_tree_with_one_new_case_computes_only_that_case_and_shares_every_shard(tmp_path):
    inputs, out = collection(tmp_path / "in", n=2), tmp_path / "out"
    run_build(small_config(), [str(inputs)], str(out))
    copy = tmp_path / "restored"
    shutil.copytree(inputs, copy)  # the same bytes under other paths, inodes and times
    write_ctspine_case(copy, "c9", noise_seed=9)
    second = run_build(small_config(), [str(copy)], str(out))
    assert second.published and second.version == "v2"
    assert second.cases_cached == 2  # c0 and c1 came from the cache: only c9 was computed
    v1, v2 = _shard_inodes(out / "orch" / "v1", ["c0", "c1"]), _shard_inodes(out / "orch" / "v2", ["c0", "c1"])
    assert v1 and v1 == v2  # every unchanged case's shard is v1's file, not a copy
