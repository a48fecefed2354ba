"""Start-up imports: optional ones that cost seconds and serve nothing, and big ones made cheaper.

jsonschema (imported by Prefect, in the build and in its API server) imports `rfc3987_syntax` when it
is installed - Jupyter's `jsonschema[format-nongpl]` brings it - only to check the "iri" and
"iri-reference" string formats, and that package builds its grammar at import: ~1.9 s on a 2-core
machine, in every process that imports Prefect, and several more when two such processes start at
once. No SpineForge or Prefect schema uses those formats. A `None` entry in `sys.modules` makes the
import raise ImportError, which jsonschema handles as "not installed" (those two formats are then not
checked). Only SpineForge's own processes do this (the `spineforge` command, its API server, its
local Dask workers); importing `pipelines` as a library changes nothing.
"""
from __future__ import annotations

import gc
import sys
from contextlib import contextmanager

SLOW_OPTIONAL_IMPORTS = ("rfc3987_syntax",)


def skip_slow_optional_imports() -> None:
    """Make the optional imports above report "not installed" in this process (when not imported yet)."""
    for name in SLOW_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)


@contextmanager
def imports_without_gc():
    """Import big module trees with Python's cyclic garbage collector paused.

    Importing Prefect, torch and the pipeline creates hundreds of thousands of long-lived objects,
    and the collector traverses them again and again while they are created (generation thresholds
    are counts of allocations). Paused for the import of `pipelines.flows`, the import took 5.6 s
    instead of 6.8 s (medians of 10, 2-core machine); nothing that an import leaves behind is
    garbage the collector would have freed sooner. It is resumed as the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
