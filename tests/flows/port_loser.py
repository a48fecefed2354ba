"""Stands in for an API server that lost the race for its port: it starts, then exits with uvicorn's
status for a port it could not bind (3), as `pipelines.runtime.api_server` does in that case."""
import sys
import time

if __name__ == "__main__":
    time.sleep(1.0)
    sys.exit(3)
