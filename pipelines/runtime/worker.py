"""Dask worker preload: import the pipeline once, when a local worker process starts.

Named in `LocalCluster(preload=[...])`, so the seconds of importing torch, diffdrr, SimpleITK
and Prefect overlap with the flow's own start-up instead of delaying each worker's first case.
"""
import prefect  # noqa: F401  (the imports are the point)

import pipelines.case.process  # noqa: F401
