"""Two real ranks (torch.distributed, gloo, two processes), two DataLoader workers each."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

RANK_SCRIPT = Path(__file__).with_name("ranks.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(training_version):
    root, _ = training_version
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, str(RANK_SCRIPT), str(root)], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    result = json.loads(outs[0][0].strip().splitlines()[-1])
    print(json.dumps({k: v for k, v in result.items() if k != "ranks"}),
          {f"rank{r}": {k: len(v) for k, v in seen.items()} for r, seen in enumerate(result["ranks"])})
    return result


def _epoch(result, key):
    return [sid for seen in result["ranks"] for sid in seen[key]]


def test_every_sample_once_per_epoch_over_ranks_and_workers(two_ranks):
    n = two_ranks["n_samples"]
    assert n >= 16  # enough that two ranks x two workers each hold several batches
    for key in ("epoch0", "epoch1", "epoch2_uninterrupted"):
        ids = _epoch(two_ranks, key)
        assert len(ids) == n and len(set(ids)) == n, key
    r0, r1 = (set(seen["epoch0"]) for seen in two_ranks["ranks"])
    assert r0 and r1 and not r0 & r1


def test_same_order_for_the_same_seed_and_epoch_another_for_another_epoch(two_ranks):
    for seen in two_ranks["ranks"]:
        assert seen["epoch0"] == seen["epoch0_again"]
        assert seen["epoch0"] != seen["epoch1"]


def test_a_restarted_job_sees_exactly_the_samples_it_had_not_seen(two_ranks):
    n = two_ranks["n_samples"]
    before = _epoch(two_ranks, "before_stop")
    after = _epoch(two_ranks, "after_restart")
    assert len(before) == 3 * two_ranks["batch"] * 2  # 3 batches of 2 on each of 2 ranks
    assert two_ranks["state"]["consumed"] == len(before)
    assert not set(before) & set(after) and len(before) + len(after) == n
    assert set(before) | set(after) == set(_epoch(two_ranks, "epoch2_uninterrupted"))
    for seen in two_ranks["ranks"]:  # each rank continues its own uninterrupted sequence exactly
        assert seen["before_stop"] + seen["after_restart"] == seen["epoch2_uninterrupted"]
