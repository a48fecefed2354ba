"""Dask worker preload of SpineForge's local clusters, run when a worker process starts.

Named in `LocalCluster(preload=[...])`: the worker dies with the build that started it (even a
build killed with SIGKILL leaves no worker behind), and the seconds of importing torch, diffdrr,
SimpleITK and Prefect overlap with the flow's own start-up instead of delaying its first case.
A worker is one of SpineForge's own processes, so it skips the slow optional imports first.
"""
from pipelines.runtime.imports import imports_without_gc, skip_slow_optional_imports
from pipelines.runtime.lifetime import die_with_parent

die_with_parent()
skip_slow_optional_imports()

with imports_without_gc():
    import prefect  # noqa: F401  (the imports are the point)

    import pipelines.case.process  # noqa: F401
