"""The build flow, in DESIGN order:

1. discover & normalise names, hash inputs, assign splits (ingest)
2-7. one coarse task per case: translate labels, QC, resample, crop, sample, render -> staged file
8. gather: shards -> manifest -> cases -> report -> dataset.json -> atomic rename

The task runner is chosen by the caller (`run_build`), not hard-wired in the decorator.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, unmapped

import pipelines
from pipelines.case import CaseResult
from pipelines.ingest.cases import ingest_inputs
from pipelines.ingest.discover import InputError
from pipelines.io.publish import plan_version, record_lineage
from pipelines.tasks import process_case_task, publish_task
from schemas.config import BuildConfig
from schemas.manifest import QC_ACCEPTED, QC_QUARANTINED


class BuildError(Exception):
    pass


@dataclass
class BuildSummary:
    version_dir: str
    version: str
    build_id: str
    published: bool  # False when this build_id was already published (no-op)
    counts: dict
    quarantined: list[dict]
    seconds: float


def compute_build_id(input_hashes: dict[str, str], config: BuildConfig, code_version: str) -> str:
    payload = json.dumps({"inputs": sorted(input_hashes.values()), "config": config.canonical_json(),
                          "code": code_version, "seed": config.seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _gather(futures, jobs, rows: dict[str, dict], seed: int) -> tuple[list[dict], dict[str, str]]:
    """Wait for case tasks; a failed one becomes a quarantine row, never a crashed build."""
    manifest, staged = [], {}
    for future, job in zip(futures, jobs):
        row = rows[job.case.case_id]
        try:
            result: CaseResult = future.result()
        except Exception as exc:  # noqa: BLE001 - any failure of one case quarantines that case
            row.update(qc_status=QC_QUARANTINED, qc_reason="processing_error",
                       qc_message=f"{type(exc).__name__}: {exc}"[:500])
            continue
        row.update(result.info, qc_status=result.qc_status, qc_reason=result.qc_reason,
                   qc_message=result.qc_message)
        if result.qc_status == QC_ACCEPTED:
            staged[job.case.case_id] = result.staging_file
            manifest += [dict(sample, case_id=job.case.case_id, split=job.split,
                              input_sha256=job.input_sha256, seed=seed) for sample in result.samples]
    return manifest, staged


@flow(name="spineforge-build")
def build_dataset(config: BuildConfig, inputs: list[str], out: str, version: str | None = None,
                  manifests_dir: str | None = None) -> BuildSummary:
    started = time.perf_counter()
    logger = get_run_logger()
    ingest = ingest_inputs([Path(p) for p in inputs], config)
    logger.info("discovered %d cases (%d to process), %d unmatched files, %d problems",
                len(ingest.rows), len(ingest.jobs), len(ingest.discovery.unmatched), len(ingest.problems))
    code_version = pipelines.__version__
    build_id = compute_build_id(ingest.input_hashes, config, code_version)
    plan = plan_version(Path(out), config.dataset, build_id, version)
    if plan.existing:
        logger.info("build %s is already published as %s; nothing to do", build_id, plan.version)
        card = json.loads((plan.dataset_dir / plan.version / "dataset.json").read_text())
        return BuildSummary(str(plan.dataset_dir / plan.version), plan.version, build_id, False,
                            card["counts"], [], time.perf_counter() - started)

    work = plan.dataset_dir / ".work" / build_id
    futures = process_case_task.map(ingest.jobs, config=unmapped(config),
                                     staging_dir=unmapped(str(work / "cases")))
    manifest, staged = _gather(futures, ingest.jobs, ingest.rows, config.seed)
    case_rows = list(ingest.rows.values())
    quarantined = [r for r in case_rows if r["qc_status"] == QC_QUARANTINED]
    if not manifest:
        reasons = "; ".join(f"{r['case_id']}: {r['qc_reason']} ({r['qc_message']})" for r in quarantined)
        raise BuildError(f"no samples to publish: {reasons or 'no cases found in ' + ', '.join(inputs)}")

    card = {"name": config.dataset, "build_id": build_id, "code_version": code_version,
            "config": config.model_dump(mode="json"), "seed": config.seed,
            "input_hash": hashlib.sha256("".join(sorted(ingest.input_hashes.values())).encode()).hexdigest(),
            "inputs": [str(Path(p).resolve()) for p in inputs],
            "unmatched_files": ingest.discovery.unmatched, "ingest_problems": ingest.problems}
    version_dir = publish_task(plan, manifest, case_rows, staged, card, config.shards.target_bytes)
    shutil.rmtree(work, ignore_errors=True)
    if work.parent.is_dir() and not any(work.parent.iterdir()):
        work.parent.rmdir()
    published = json.loads((Path(version_dir) / "dataset.json").read_text())
    logger.info("published %s", version_dir)
    if manifests_dir:
        logger.info("recorded lineage in %s", record_lineage(Path(version_dir), Path(manifests_dir)))
    return BuildSummary(version_dir, plan.version, build_id, True, published["counts"],
                        [{k: r[k] for k in ("case_id", "qc_reason", "qc_message")} for r in quarantined],
                        time.perf_counter() - started)


def task_runner_for(workers: int, dask_address: str | None):
    """Threads for one worker; a Dask LocalCluster for several; an existing cluster by address."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    if workers > 1:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=1)


def run_build(config: BuildConfig, inputs: list[str], out: str, version: str | None = None,
              workers: int = 1, dask_address: str | None = None, manifests_dir: str | None = None) -> BuildSummary:
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    for path in inputs:  # fail before any flow machinery starts
        if not Path(path).is_dir():
            raise InputError(f"input folder not found: {path}")
    runner = task_runner_for(workers, dask_address)
    return build_dataset.with_options(task_runner=runner)(
        config=config, inputs=[str(p) for p in inputs], out=str(out), version=version,
        manifests_dir=str(manifests_dir) if manifests_dir else None)
