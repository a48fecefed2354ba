"""A Prefect API server's process: Prefect's server app under uvicorn.

`python -m pipelines.runtime.api_server PORT [PARENT_PID]` serves it on 127.0.0.1:PORT, with the same
uvicorn call Prefect's own temporary server makes. With PARENT_PID (a build's temporary server) it
ends when that process does, SIGKILL included (`pipelines.runtime.lifetime`); without it (the server
`spineforge api start` keeps) it runs until stopped. Exit status 3 (uvicorn's) means the port was taken.
"""
from __future__ import annotations

import sys

from pipelines.runtime.lifetime import end_with_parent


def main(argv: list[str]) -> None:
    import uvicorn

    port = int(argv[0])
    if len(argv) > 1:
        end_with_parent(int(argv[1]))
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    main(sys.argv[1:])
