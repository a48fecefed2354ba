"""The case cache: one Prefect-persisted result and one folder of staged shards per case cache key.

A case task's result is stored by Prefect under the case's key (`pipelines.case.keys`: content,
relevant config, code), in a LocalFileSystem block on the dataset's cache folder; its staged shards
lie in `<cache>/cases/<key>/`; the key is the plan's, computed once per case. A record whose staged
files are gone or lie elsewhere is recomputed once. Pruning (`BuildPlan.finish`) drops entries no build has used for the keep period.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import unmapped
from prefect.filesystems import LocalFileSystem

from pipelines.case.process import CaseResult
from pipelines.ingest.cases import CaseJob
from schemas.config import BuildConfig
from schemas.layout import staged_case_dir


def result_storage(folder: Path) -> str:
    """A saved LocalFileSystem block for the cache folder (Prefect needs storage saved server-side)."""
    folder = folder.resolve()
    name = "spineforge-cache-" + hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    LocalFileSystem(basepath=str(folder)).save(name, overwrite=True)
    return f"local-file-system/{name}"


def staged_in_place(result: CaseResult, key: str, cache: Path) -> bool:
    """A case result's staged files exist and lie under its own key in this dataset's cache. A cached
    record can point elsewhere: at files since removed, or -- when one process builds two datasets from
    the same inputs, so the same cache key -- at the other dataset's cache."""
    own = staged_case_dir(cache, key).resolve()
    return all(Path(f).is_file() and Path(f).resolve().parent == own for f in result.staging_files.values())


def run_cases(task, jobs: list[CaseJob], keys: dict[str, str], config: BuildConfig, cache: Path,
              options: dict) -> tuple[dict[str, CaseResult | Exception], int]:
    """One task per case, cached by its key; returns (result or the exception it failed with, per case;
    how many came from the cache)."""
    futures = task.map(jobs, [keys[j.case.case_id] for j in jobs], config=unmapped(config),
                       cache_dir=unmapped(str(cache)), **{k: unmapped(v) for k, v in options.items()})
    results, cached = {}, 0
    for job, future in zip(jobs, futures):
        try:
            result: CaseResult = future.result()
            if not staged_in_place(result, keys[job.case.case_id], cache):  # recompute once
                result = task.with_options(refresh_cache=True).submit(job, keys[job.case.case_id], config=config,
                                                                      cache_dir=str(cache), **options).result()
            elif future.state.name == "Cached":
                cached += 1
        except Exception as exc:  # noqa: BLE001 - any failure of one case (after retries) quarantines it
            result = exc
        results[job.case.case_id] = result
    return results, cached
