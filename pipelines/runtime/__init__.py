"""Where the build runs: thread shares, memory plans, Dask clusters and the Prefect API."""
