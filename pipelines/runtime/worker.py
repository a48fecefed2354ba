"""Dask worker preload of SpineForge's local clusters, run when a worker process starts.

Named in `LocalCluster(preload=[...])`: the worker ends with the build that started it (a build
killed with SIGKILL leaves no worker behind), and the seconds of importing torch, diffdrr,
SimpleITK and Prefect overlap with the flow's own start-up instead of delaying its first case.
"""
import signal

from pipelines.runtime.lifetime import end_with_parent

end_with_parent(first_signal=signal.SIGKILL)  # a worker of a dead build has nothing to save

import prefect  # noqa: E402, F401  (the imports are the point)

import pipelines.case.process  # noqa: E402, F401
