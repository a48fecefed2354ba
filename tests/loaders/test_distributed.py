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


def _run_ranks(root, *mode) -> dict:
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, str(RANK_SCRIPT), str(root), *mode], env=dict(env, RANK=str(r)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return json.loads(outs[0][0].strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_ranks(training_version):
    root, _ = training_version
    result = _run_ranks(root)
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


def test_streamed_views_over_two_ranks_and_two_workers_resume_exactly(training_version):
    """DRRStream under 2 DDP ranks x 2 workers each (default collate): every epoch position once; a
    job stopped after 3 batches per rank and restarted from `state_dict` sees exactly the rest; and
    every item is bit-identical to the one a single process renders for that (seed, epoch, position)."""
    from pipelines.loaders.stream import DRRStream
    from tests.loaders.ranks import BATCH, STOP_AFTER, STREAM, digest

    root, _ = training_version
    result = _run_ranks(root, "stream")
    n = result["n_items"]
    print(json.dumps({"state": result["state"], **{f"rank{r}": {k: [p for p, *_ in v] for k, v in seen.items()}
                                                   for r, seen in enumerate(result["ranks"])}}))
    items = {key: [it for seen in result["ranks"] for it in seen[key]] for key in result["ranks"][0]}
    assert sorted(p for p, *_ in items["epoch0"]) == list(range(n))
    assert len(items["before_stop"]) == STOP_AFTER * BATCH * 2 == result["state"]["consumed"]
    resumed = [p for p, *_ in items["before_stop"] + items["after_restart"]]
    assert sorted(resumed) == list(range(n))
    single = DRRStream(root, config=STREAM, seed=7)
    for epoch, key in ((0, "epoch0"), (1, "after_restart")):
        single.set_epoch(epoch)
        for position, xray, drr in items[key]:
            item = single.item(position)
            assert (digest(item["drr_xray"]), digest(item["drr"])) == (xray, drr), (epoch, position)
