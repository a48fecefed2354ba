"""`spineforge serve`: the build flow as a Prefect deployment on a cron schedule."""
from __future__ import annotations

from pathlib import Path

from prefect import flow

from pipelines.flows import DEFAULT_CACHE_KEEP_DAYS, run_build
from schemas.config import BuildConfig, load_config

DEFAULT_CRON = "0 2 * * *"  # nightly at 02:00


@flow(name="spineforge-scheduled-build")
def scheduled_build(config: dict, inputs: list[str], out: str, manifests_dir: str | None = None,
                    workers: int = 1, dask_address: str | None = None,
                    cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS) -> str:
    """One scheduled run: the build exactly as `spineforge build` runs it (its flow is a subflow
    here), local Dask cluster or existing scheduler included. Returns the version folder."""
    summary = run_build(BuildConfig.model_validate(config), inputs, out, workers=workers,
                        dask_address=dask_address, manifests_dir=manifests_dir, cache_keep_days=cache_keep_days)
    return summary.version_dir


def make_deployment(config_path: Path, inputs: list[str], out: str, cron: str = DEFAULT_CRON,
                    name: str | None = None, manifests_dir: str | None = None, workers: int = 1,
                    dask_address: str | None = None, cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS):
    """A RunnerDeployment that builds `config` from `inputs` into `out` on `cron`."""
    from prefect.deployments.runner import EntrypointType

    from pipelines.errors import BuildError, InputError

    config = load_config(config_path)
    for path in inputs:
        if not Path(path).is_dir():
            raise InputError(f"input folder not found: {path}")
    if workers < 1:
        raise BuildError(f"--workers must be at least 1, got {workers}")
    parameters = {"config": config.model_dump(mode="json"), "inputs": [str(Path(p).resolve()) for p in inputs],
                  "out": str(Path(out).resolve()), "manifests_dir": manifests_dir, "workers": workers,
                  "dask_address": dask_address, "cache_keep_days": cache_keep_days}
    # runs import the flow by module path: loading it from its file would put pipelines/ itself on
    # sys.path, where a module named like a standard one shadows it in spawned worker processes
    return scheduled_build.to_deployment(
        entrypoint_type=EntrypointType.MODULE_PATH,
        name=name or f"{config.dataset}-scheduled",
        cron=cron,
        parameters=parameters,
        description=f"Scheduled SpineForge build of {config.dataset} from {', '.join(inputs)}",
        tags=["spineforge"],
    )


def serve(config_path: Path, inputs: list[str], out: str, cron: str = DEFAULT_CRON, name: str | None = None,
          manifests_dir: str | None = None, workers: int = 1, dask_address: str | None = None,
          cache_keep_days: float = DEFAULT_CACHE_KEEP_DAYS) -> None:
    """Register the deployment and run its scheduled builds in this process until interrupted, under
    the configured PREFECT_API_URL, else the server `spineforge api start` keeps running, else
    Prefect's temporary one."""
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from pipelines.runtime.api_service import running_api_url

    kept = None if PREFECT_API_URL.value() else running_api_url()
    with temporary_settings({PREFECT_API_URL: kept} if kept else {}):
        prefect_serve(make_deployment(config_path, inputs, out, cron, name, manifests_dir, workers, dask_address,
                                      cache_keep_days))
