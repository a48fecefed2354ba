"""Fixed start-up cost of a build: `spineforge demo` wall time against its in-flow time.

Each run is the `spineforge` command in a fresh process, as a user runs it, into a fresh `--out`
(so it is real work, not the no-op), after one warm-up run that pays Prefect's database creation:

- temporary API: no PREFECT_API_URL, so the build launches its own server and stops it at the end;
- kept API: a server started once beforehand with `spineforge api start`, which builds find by
  themselves, as a host that builds often would run it;
- no-op: the same command again on an already-published --out.

In-flow time is Prefect's own: from its "Beginning flow run" line to the flow's "Finished in state"
line. Over = wall - in-flow: Python start, imports, the API, flow-run creation and exit. The baseline
is the bare interpreter start measured in the same process (`python -c pass`).

Ends with `RESULT temp_api_over_s=… kept_api_over_s=… noop_s=… flow_s=… python_start_s=…`.

    python benchmarks/startup.py [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

STAMP = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) \| \w+\s+\| Flow run '[^']+' - (Beginning flow run|Finished in state)")


def flow_seconds(log: str) -> float:
    """Seconds from Prefect's "Beginning flow run" line to the flow's "Finished in state" line."""
    stamps = {}
    for line in log.splitlines():
        if m := STAMP.match(line):
            stamps.setdefault(m.group(2), datetime.strptime(m.group(1), "%H:%M:%S.%f"))
    if len(stamps) != 2:
        raise RuntimeError(f"no flow-run start and end in the log:\n{log[-2000:]}")
    spent = stamps["Finished in state"] - stamps["Beginning flow run"]
    return (spent + timedelta(days=1) if spent.total_seconds() < 0 else spent).total_seconds()


def demo(out: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(["spineforge", "demo", "--out", str(out)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"spineforge demo failed:\n{done.stderr[-3000:]}")
    return wall, done.stdout + done.stderr


def timed_runs(tmp: Path, label: str, env: dict[str, str], runs: int) -> list[dict]:
    rows = []
    for i in range(runs):
        out = tmp / f"{label}-{i}"
        wall, log = demo(out, env)
        flow = flow_seconds(log)
        rows.append({"wall": wall, "flow": flow, "over": wall - flow})
        print(f"  {label:14s} run {i + 1}: wall {wall:5.1f} s, in-flow {flow:5.1f} s, over {wall - flow:4.1f} s",
              flush=True)
        shutil.rmtree(out)
    return rows


def spineforge_api(action: str, env: dict[str, str]) -> str:
    done = subprocess.run(["spineforge", "api", action, "--port", "0"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"spineforge api {action} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
        env.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_start = time.perf_counter() - started

        print("warm-up (Prefect's database, the renderer's compiled kernel) ...", flush=True)
        demo(tmp / "warm", env)
        temp = timed_runs(tmp, "temporary API", env, args.runs)
        noop = [demo(tmp / "warm", env)[0] for _ in range(args.runs)]
        print(spineforge_api("start", env), flush=True)
        try:
            running = timed_runs(tmp, "kept API", env, args.runs)
        finally:
            print(spineforge_api("stop", env), flush=True)

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print(f"{'':14s} {'wall s':>7s} {'in-flow s':>9s} {'over s':>7s}   (medians of {args.runs})")
    for label, rows in (("temporary API", temp), ("kept API", running)):
        print(f"{label:14s} {med(rows, 'wall'):7.1f} {med(rows, 'flow'):9.1f} {med(rows, 'over'):7.1f}")
    print(f"no-op re-run: {statistics.median(noop):.2f} s; bare Python start {python_start:.2f} s")
    print(f"RESULT temp_api_over_s={med(temp, 'over'):.1f} kept_api_over_s={med(running, 'over'):.1f} "
          f"noop_s={statistics.median(noop):.2f} flow_s={med(temp, 'flow'):.1f} python_start_s={python_start:.2f}")


if __name__ == "__main__":
    main()
