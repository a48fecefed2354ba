"""A build request: what to build from which inputs, and where it goes -- every check made once, when
the request is made, and the destination checked before any input is read.

`spineforge build` / `demo`, the scheduled flow of `spineforge serve` and the Python API (`run_build`)
each make one and hand it to `pipelines.builds.run.build`. An output that is an object store
(`s3://bucket/prefix`) is built in a local work folder first and then published; whether it is one is
decided here, once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import BuildError, InputError
from pipelines.ingest.discover import check_roots
from pipelines.io.store import S3Url, StoreOptions, is_remote, store_errors
from pipelines.physics.meshes import MeshError, load_mesh
from schemas.config import BuildConfig
from schemas.layout import REMOTE_WORK_DIR, user_cache_dir

DEFAULT_CACHE_KEEP_DAYS = 30.0


def detector_like_radiograph(config: BuildConfig) -> BuildConfig:
    """The config with `detector.like_radiograph` read into numbers (height, width, pitch, SDD, SOD of
    the radiograph, or of a folder's radiographs, which must agree): the version records what it rendered.
    Stored views stay AP and LAT; the radiograph's direction is for views rendered while training."""
    d = config.detector
    if not d.like_radiograph:
        return config
    from pipelines.physics.radiograph_view import views_like
    from schemas.detector import Geometry

    template = Geometry(d.height, d.width, d.pixel_spacing_mm, d.sdd_mm, d.sod_mm, d.renderer,
                        d.samples_per_voxel, d.reverse_x_axis, d.error_budget)
    views = views_like(d.like_radiograph, template, d.like_binning)
    sods = sorted({round(v.geometry.sod_mm, 6) for v in views})
    if len(sods) > 1:
        raise BuildError(f"detector.like_radiograph {d.like_radiograph}: the radiographs' source-to-isocentre "
                         f"distances differ ({', '.join(f'{s:g}' for s in sods)} mm); a build has one")
    g = views[0].geometry
    detector = d.model_copy(update={"height": g.height, "width": g.width, "pixel_spacing_mm": g.pixel_spacing_mm,
                                    "sdd_mm": g.sdd_mm, "sod_mm": g.sod_mm, "like_radiograph": None,
                                    "from_radiograph": str(d.like_radiograph)})
    return config.with_detector(detector)


def check_inputs(inputs) -> None:
    """Fail before any work when there is no input folder or one is missing."""
    if not inputs:
        raise InputError("a build needs at least one input folder (--input DIR)")
    check_roots([Path(p) for p in inputs])


@dataclass(frozen=True)
class BuildRequest:
    """One build, as asked for; made only valid (inputs there, counts sensible)."""

    config: BuildConfig
    inputs: tuple[str, ...]
    out: str = "out"  # the output root: a folder, or s3://bucket/prefix
    version: str | None = None  # None: the next vN (or the version already holding this build)
    work: str | None = None  # with an s3:// out: the local folder it is built in (default under the user cache)
    workers: int = 1  # local worker processes (a Dask LocalCluster when > 1)
    dask_address: str | None = None  # an existing Dask scheduler instead
    manifests_dir: str | None = None  # also record the published version's lineage here
    cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS  # drop cached cases unused this long
    compact: bool = False  # pack per-case shards into target-sized ones in the version published
    threads_per_worker: int | None = None  # None: each local worker takes its share of the cores
    store: StoreOptions = field(default_factory=StoreOptions)  # how to reach an s3:// out

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(str(p) for p in self.inputs))
        object.__setattr__(self, "out", str(self.out))
        object.__setattr__(self, "config", detector_like_radiograph(self.config))
        check_inputs(self.inputs)
        if self.workers < 1:
            raise BuildError(f"--workers must be at least 1, got {self.workers}")
        if self.cache_keep_days < 0:
            raise BuildError(f"--cache-keep-days must be 0 or more, got {self.cache_keep_days:g}")
        if self.remote:
            S3Url.parse(self.out)  # a malformed URL is refused here, not after the build
        if self.config.xray.enabled:  # a user's implant mesh that cannot be projected: refused before any case
            for mesh in self.config.xray.instruments.meshes:
                try:
                    load_mesh(mesh.path)
                except MeshError as exc:
                    raise BuildError(f"xray.instruments.meshes: {exc}") from None

    @property
    def remote(self) -> bool:
        """Whether the output is an object store."""
        return is_remote(self.out)

    @property
    def build_root(self) -> str:
        """Where the version is built: `out` itself, or for an s3:// out the work folder
        (`work`, else ~/.cache/spineforge/spineforge-work/<bucket>/<prefix>)."""
        if not self.remote:
            return self.out
        if self.work:
            return self.work
        url = S3Url.parse(self.out)
        return str(user_cache_dir() / REMOTE_WORK_DIR / url.bucket / (url.prefix or "_"))

    @property
    def build_version(self) -> str | None:
        """The version name asked of the local build (a store names its own versions)."""
        return None if self.remote else self.version


def check_destination(request: BuildRequest) -> None:
    """Before any input is read: the folder the version is built in can be written and, for an s3://
    out, the store answers with these credentials and the bucket exists."""
    _check_writable(Path(request.build_root) / request.config.dataset)
    if request.remote:
        url = S3Url.parse(request.out)
        with store_errors(f"{url}: bucket {url.bucket}"):
            request.store.client().head_bucket(Bucket=url.bucket)


def _check_writable(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BuildError(f"output folder is not writable: {target} ({exc.strerror})") from exc
