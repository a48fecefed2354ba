"""`spineforge serve`: the build flow as a Prefect deployment on a cron schedule."""
from __future__ import annotations

from pathlib import Path

from pipelines.flows import build_dataset
from schemas.config import load_config

DEFAULT_CRON = "0 2 * * *"  # nightly at 02:00


def make_deployment(config_path: Path, inputs: list[str], out: str, cron: str = DEFAULT_CRON,
                    name: str | None = None, manifests_dir: str | None = None):
    """A RunnerDeployment that builds `config` from `inputs` into `out` on `cron`."""
    config = load_config(config_path)
    for path in inputs:
        if not Path(path).is_dir():
            from pipelines.ingest.discover import InputError

            raise InputError(f"input folder not found: {path}")
    parameters = {"config": config.model_dump(mode="json"), "inputs": [str(Path(p).resolve()) for p in inputs],
                  "out": str(Path(out).resolve()), "manifests_dir": manifests_dir}
    return build_dataset.to_deployment(
        name=name or f"{config.dataset}-scheduled",
        cron=cron,
        parameters=parameters,
        description=f"Scheduled SpineForge build of {config.dataset} from {', '.join(inputs)}",
        tags=["spineforge"],
    )


def serve(config_path: Path, inputs: list[str], out: str, cron: str = DEFAULT_CRON, name: str | None = None,
          manifests_dir: str | None = None) -> None:
    """Register the deployment and run its scheduled builds in this process until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(make_deployment(config_path, inputs, out, cron, name, manifests_dir))
