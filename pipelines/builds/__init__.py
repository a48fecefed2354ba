"""Builds: a request checked once (`request`), planned by content (`plan`), cases run as cached Prefect
tasks (`tasks`, `cache`) by the build flow (`flow`), published locally or to an object store
(`publish`), from the one entry point `run.build`; `serve` runs it on a schedule."""
