"""The temporary Prefect API's process: Prefect's server app under uvicorn.

`python -m pipelines.runtime.api_server PORT` serves it on 127.0.0.1:PORT. It is Prefect's own app
and the same uvicorn call Prefect's temporary server makes; the one difference is that the slow
optional import of `pipelines.runtime.imports` is skipped first and the server's modules are imported
with the garbage collector paused, which brings its answer ~5 s earlier when it starts beside a
build's imports on a 2-core machine. Exit status 3 (uvicorn's) means the port was taken.
"""
from __future__ import annotations

import sys

from pipelines.runtime.imports import imports_without_gc, skip_slow_optional_imports


def main(argv: list[str]) -> None:
    port = int(argv[0])
    skip_slow_optional_imports()
    with imports_without_gc():
        import prefect.server.api.server  # noqa: F401  (what uvicorn's factory call then finds loaded)
        import uvicorn

    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    main(sys.argv[1:])
