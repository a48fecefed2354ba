"""Optional third-party imports that cost seconds and serve nothing a SpineForge process does.

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

import sys

SLOW_OPTIONAL_IMPORTS = ("rfc3987_syntax",)


def skip_slow_optional_imports() -> None:
    """Make the optional imports above report "not installed" in this process (when not imported yet)."""
    for name in SLOW_OPTIONAL_IMPORTS:
        sys.modules.setdefault(name, None)
