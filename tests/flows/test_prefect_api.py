"""The build's Prefect API: which one a build uses, and the temporary server's own process."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipelines.runtime import prefect_api
from pipelines.runtime.prefect_api import LocalAPI, begin_local_api, configured_api_url

PREFECT_VARS = ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH")
PREFECT_DEFAULTS = Path(importlib.util.find_spec("prefect").origin).parent / "settings" / "profiles.toml"


def prefect_says(cases: dict[str, dict[str, str]]) -> dict[str, str | None]:
    """PREFECT_API_URL as Prefect's own settings resolve it, case by case (one process, fresh settings
    for each case's environment)."""
    code = """
import json, os, sys
from prefect.settings.models.root import Settings
cases, seen = json.loads(sys.argv[1]), {}
for name, extra in cases.items():
    os.environ.update(extra)
    seen[name] = Settings().api.url
    for key in extra:
        del os.environ[key]
print(json.dumps(seen))
"""
    out = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No API configured by the environment; an empty PREFECT_HOME of this test's own."""
    for name in PREFECT_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_the_configured_api_url_is_read_as_prefect_reads_it(clean_env, tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:4321/api"\n'
                        '\n[profiles.other]\nPREFECT_LOGGING_LEVEL = "DEBUG"\n')
    cases = {
        "nothing configured": {},
        "the active profile of a user file": {"PREFECT_PROFILES_PATH": str(profiles)},
        "a profile chosen by PREFECT_PROFILE": {"PREFECT_PROFILES_PATH": str(profiles), "PREFECT_PROFILE": "other"},
        "a profile missing from the file": {"PREFECT_PROFILES_PATH": str(profiles), "PREFECT_PROFILE": "local"},
        "Prefect's own 'local' profile": {"PREFECT_PROFILES_PATH": str(PREFECT_DEFAULTS), "PREFECT_PROFILE": "local"},
        "no profiles file": {"PREFECT_PROFILES_PATH": str(tmp_path / "absent.toml"), "PREFECT_PROFILE": "local"},
        "the environment over a profile": {"PREFECT_PROFILES_PATH": str(profiles),
                                          "PREFECT_API_URL": "http://127.0.0.1:9999/api"},
    }
    seen = {}
    for name, extra in cases.items():
        for key, value in extra.items():
            clean_env.setenv(key, value)
        seen[name] = configured_api_url()
        for key in extra:
            clean_env.delenv(key)
    assert seen == prefect_says(cases)
    assert seen["nothing configured"] is None and seen["a profile chosen by PREFECT_PROFILE"] is None
    assert seen["a profile missing from the file"] is None and seen["no profiles file"] is None
    assert seen["the active profile of a user file"] == "http://127.0.0.1:4321/api"
    assert seen["Prefect's own 'local' profile"] == "http://127.0.0.1:4200/api"


def test_a_configured_api_means_no_temporary_server(clean_env, tmp_path):
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:4321/api"\n')
    clean_env.setenv("PREFECT_PROFILES_PATH", str(profiles))
    clean_env.setattr(prefect_api, "_server", None)
    begin_local_api()
    assert prefect_api._server is None


def test_the_temporary_server_answers_and_skips_the_slow_optional_import(clean_env):
    server = LocalAPI()
    try:
        url = server.wait(120)
        with urllib.request.urlopen(f"{url}/admin/version", timeout=30) as response:
            assert response.status == 200 and json.loads(response.read())  # Prefect's API, not just a socket
        import psutil

        assert "pipelines.runtime.api_server" in " ".join(psutil.Process(server.process.pid).cmdline())
    finally:
        server.stop()
    assert not server.alive()


def test_skipping_the_optional_import_keeps_jsonschema_validating():
    code = """
import sys
from pipelines.runtime.imports import SLOW_OPTIONAL_IMPORTS, skip_slow_optional_imports
skip_slow_optional_imports()
import jsonschema
assert all(sys.modules[name] is None for name in SLOW_OPTIONAL_IMPORTS)
schema = {"type": "object", "properties": {"n": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}}}
checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
jsonschema.validate({"n": 1, "at": "2026-11-22T02:00:00Z"}, schema, format_checker=checker)
for bad in ({"n": "one"}, {"at": "not a time"}):
    try:
        jsonschema.validate(bad, schema, format_checker=checker)
    except jsonschema.ValidationError:
        continue
    raise SystemExit(f"accepted {bad}")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def spineforge_api(action: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "api", action], capture_output=True, text=True)


def test_a_kept_api_serves_builds_until_stopped(clean_env, tmp_path):
    import psutil
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.flows import run_build
    from pipelines.runtime.api_service import recorded_api, running_api_url, start_api, stop_api
    from tests.flows.test_orchestration import ProcessTree, collection, small_config

    assert spineforge_api("status").returncode == 1  # none yet: builds start their own
    api, started = start_api(port=0)
    try:
        assert started and running_api_url() == api.url
        assert start_api(port=0) == (api, False)  # found, not a second server
        status = spineforge_api("status")
        assert status.returncode == 0 and api.url in status.stdout and "answering" in status.stdout
        inputs = collection(tmp_path / "in", n=1)
        earlier = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. an earlier build's server
        # as on a user's machine: no PREFECT_API_URL anywhere
        with temporary_settings(restore_defaults={PREFECT_API_URL}), ProcessTree() as tree:
            summary = run_build(small_config(), [str(inputs)], str(tmp_path / "out"))
        assert summary.published
        started_here = [cmd for pid, (_, cmd, _) in tree.seen.items()
                        if "api_server" in cmd and pid not in earlier and pid != api.pid]
        assert started_here == []  # the build launched no temporary server
        request = urllib.request.Request(f"{api.url}/flow_runs/filter", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            runs = json.loads(response.read())
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"]  # the build ran against the kept server
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        EventsWorker.drain_all()  # the build's events and logs reach the kept server before it goes
        APILogWorker.drain_all()
        stopped = stop_api()
    assert stopped == api and recorded_api() is None and running_api_url() is None
    assert not psutil.pid_exists(api.pid) or psutil.Process(api.pid).status() == psutil.STATUS_ZOMBIE
    assert "no Prefect API was running" in spineforge_api("stop").stdout
