"""Caching, retries, artifacts, failure modes and determinism of the build flow."""
import errno
import hashlib

import h5py
import numpy as np
import pandas as pd
import pytest

from pipelines.builds.run import run_build
from pipelines.errors import BuildError, PublishError
from tests.conftest import write_ctspine_case


def small_config(**update):
    from schemas.config import BuildConfig

    base = {"dataset": "orch", "vertebra": {"size": 16, "levels": ["L1"]}, "x2ct": {"size": 24, "z_offsets_mm": [0]},
            "drr": {"pairs_per_case": 1, "poses_per_pair": 1},
            "detector": {"height": 12, "width": 12, "pixel_spacing_mm": 16.0}}
    base.update(update)
    return BuildConfig.model_validate(base)


def collection(root, n=3):
    for i in range(n):
        write_ctspine_case(root, f"c{i}", noise_seed=i)
    return root


def content(version_dir):
    """Every array of every sample, for bit-for-bit comparisons between builds."""
    out = {}
    manifest = pd.read_parquet(version_dir / "manifest.parquet")
    for row in manifest.itertuples():
        with h5py.File(version_dir / "shards" / row.shard, "r") as h5:
            g = h5[row.key]
            for name in g:
                out[(row.sample_id, name)] = g[name][()]
    return out


def assert_same_content(a, b):
    ca, cb = content(a), content(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=str(key))


def test_unchanged_cases_come_from_the_cache_and_relevant_changes_recompute(tmp_path):
    inputs = collection(tmp_path / "in")
    out = tmp_path / "out"
    first = run_build(small_config(), [str(inputs)], str(out))
    assert first.cases_cached == 0
    write_ctspine_case(inputs, "c9", noise_seed=9)  # a new case arrives
    second = run_build(small_config(), [str(inputs)], str(out))
    assert second.version == "v2" and second.cases_cached == 3
    publish_only = run_build(small_config(registration_pairs={"max_pairs_per_level": 1}), [str(inputs)], str(out))
    assert publish_only.version == "v3" and publish_only.cases_cached == 4  # no case depends on it
    changed = run_build(small_config(vertebra={"size": 20, "levels": ["L1"]}), [str(inputs)], str(out))
    assert changed.cases_cached == 0  # patch size shapes every case
    # cached and recomputed cases give the same samples
    fresh = run_build(small_config(), [str(inputs)], str(tmp_path / "fresh"))
    assert fresh.build_id == second.build_id
    assert_same_content(out / "orch" / "v2", tmp_path / "fresh" / "orch" / "v1")


def test_cache_entries_unused_for_the_keep_period_are_pruned(tmp_path):
    import os
    import time

    inputs, out = collection(tmp_path / "in", n=1), tmp_path / "out"
    cache = out / "orch" / ".cache"

    def entries():
        return {(folder, p.name) for folder in ("cases", "results") for p in (cache / folder).iterdir()}

    run_build(small_config(), [str(inputs)], str(out))
    first = entries()
    assert len(first) == 2  # one case: its staged shards and its result record
    month_ago = time.time() - 31 * 86400
    for folder, name in first:
        os.utime(cache / folder / name, (month_ago, month_ago))
    # another relevant config: a new cache entry; the first one is kept while it is younger than 40 days
    run_build(small_config(vertebra={"size": 20, "levels": ["L1"]}), [str(inputs)], str(out), cache_keep_days=40)
    names = entries()
    assert first < names and len(names) == 4
    # an unchanged re-run of the second config with the 30-day default (a no-op): the month-old entry goes
    again = run_build(small_config(vertebra={"size": 20, "levels": ["L1"]}), [str(inputs)], str(out))
    assert not again.published
    left = entries()
    assert left == names - first
    # v1 still holds the pruned entry's shards: the cache's link went, the version's stays
    assert (out / "orch" / "v1").is_dir() and not __import__("pipelines.tools.validate", fromlist=["x"]).validate_version(
        out / "orch" / "v1")
    # keep-days 0 keeps exactly what the build uses
    run_build(small_config(vertebra={"size": 20, "levels": ["L1"]}), [str(inputs)], str(out), cache_keep_days=0)
    assert entries() == left


def test_a_transient_failure_is_retried_and_a_persistent_one_quarantined(tmp_path, monkeypatch):
    import pipelines.case.process as case_module

    inputs = collection(tmp_path / "in", n=2)
    real = case_module.vertebra_samples
    calls = {"c0": 0}

    def flaky(case, config, skipped):
        if case.case_id == "c0":
            calls["c0"] += 1
            if calls["c0"] == 1:
                raise ConnectionError("transient storage hiccup")
        if case.case_id == "c1":
            raise RuntimeError("always broken")
        return real(case, config, skipped)

    monkeypatch.setattr(case_module, "vertebra_samples", flaky)
    summary = run_build(small_config(), [str(inputs)], str(tmp_path / "out"))
    cases = pd.read_parquet(tmp_path / "out" / "orch" / "v1" / "cases.parquet").set_index("case_id")
    assert calls["c0"] == 2 and cases.loc["c0", "qc_status"] == "accepted"
    assert cases.loc["c1", "qc_reason"] == "processing_error" and "always broken" in cases.loc["c1", "qc_message"]
    assert [q["case_id"] for q in summary.quarantined] == ["c1"]


def test_every_build_leaves_prefect_artifacts(tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.runtime.prefect_api import temporary_api_url

    summary = run_build(small_config(), [str(collection(tmp_path / "in", n=1))], str(tmp_path / "out"))
    api = PREFECT_API_URL.value() or temporary_api_url()  # the API the build reported to
    assert api
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["spineforge-build-report"])))
    # other builds of this session share the key: pick this build's report by its unique folder
    mine = [a for a in found if summary.version_dir in a.data]
    assert len(mine) == 1 and "Quarantined cases: 0" in mine[0].data and summary.build_id in mine[0].data


def test_unwritable_output_fails_early_with_nothing_written(tmp_path):
    inputs = collection(tmp_path / "in", n=1)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(BuildError, match="output folder is not writable"):
        run_build(small_config(), [str(inputs)], str(blocker))


def test_disk_full_publishes_nothing_and_leaves_inputs_untouched(tmp_path, monkeypatch):
    import pipelines.io.publish as publish

    inputs = collection(tmp_path / "in", n=1)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(publish, "materialize", full)
    with pytest.raises(PublishError, match="no space left on device.*nothing was published"):
        run_build(small_config(), [str(inputs)], str(tmp_path / "out"))
    dataset = tmp_path / "out" / "orch"
    assert not (dataset / "v1").exists() and not list(dataset.glob(".publishing-*"))
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in inputs.iterdir()}


class ProcessTree:
    """Every descendant process seen while the block runs: pid -> (parent pid, command line, environment)."""

    def __enter__(self):
        import threading

        import psutil

        self.seen, self._stop = {}, threading.Event()

        def sample():
            me = psutil.Process()
            while not self._stop.is_set():
                for proc in me.children(recursive=True):
                    try:
                        self.seen.setdefault(proc.pid, (proc.ppid(), " ".join(proc.cmdline()), proc.environ()))
                    except psutil.Error:
                        pass
                self._stop.wait(0.05)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_one_and_two_local_workers_build_identical_datasets(tmp_path, monkeypatch):
    """... and the two-worker build walks its input folders once (in the plan, not again in workers)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import pipelines.ingest.cases as cases

    inputs = collection(tmp_path / "in")
    one = run_build(small_config(), [str(inputs)], str(tmp_path / "one"))
    walks, real = [], cases.discover
    monkeypatch.setattr(cases, "discover", lambda roots: walks.append(roots) or real(roots))
    # as on a user's machine: no API configured, so Prefect would start temporary servers on demand
    with temporary_settings(restore_defaults={PREFECT_API_URL}), ProcessTree() as tree:
        two = run_build(small_config(), [str(inputs)], str(tmp_path / "two"), workers=2)
    assert one.build_id == two.build_id and two.cases_cached == 0 and two.published
    assert len(walks) == 1
    assert_same_content(tmp_path / "one" / "orch" / "v1", tmp_path / "two" / "orch" / "v1")
    workers = {pid: env for pid, (_, cmd, env) in tree.seen.items() if "spawn_main" in cmd}
    assert len(workers) >= 2, tree.seen
    # the workers report to this process's API instead of each starting a server of its own ...
    assert not [cmd for _, (parent, cmd, _) in tree.seen.items()
                if parent in workers and ("uvicorn" in cmd or "api_server" in cmd)]
    # ... and keep glibc's adaptive allocator (Dask's trim setting slows big-array work ~15%)
    assert all("MALLOC_TRIM_THRESHOLD_" not in env for env in workers.values())


def test_too_many_workers_for_the_largest_case_fail_before_any_work(tmp_path, monkeypatch):
    import psutil

    inputs = collection(tmp_path / "in", n=1)
    total = 2 * 2**30  # a 2 GiB machine: two workers (~0.75 GiB each for these small cases) fit, four do not
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("vm", (), {"total": total})())
    with pytest.raises(BuildError, match=r"use --workers 2 or fewer"):
        run_build(small_config(), [str(inputs)], str(tmp_path / "out"), workers=4)
    assert not (tmp_path / "out" / "orch" / "v1").exists()


def test_a_cluster_on_another_machine_needs_a_prefect_server(tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.runtime.cluster import on_this_machine

    assert on_this_machine("tcp://127.0.0.1:8786") and on_this_machine("localhost:8786")
    assert not on_this_machine("tcp://192.0.2.7:8786")  # TEST-NET-1: never a local address
    inputs = collection(tmp_path / "in", n=1)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(BuildError, match="PREFECT_API_URL"):
            run_build(small_config(), [str(inputs)], str(tmp_path / "out"), dask_address="tcp://192.0.2.7:8786")
    assert not (tmp_path / "out" / "orch" / "v1").exists()
