"""A loopback TCP proxy in front of the test S3 server that can break connections or slow them."""
from __future__ import annotations

import socket
import threading
import time


class FaultProxy:
    """Forwards 127.0.0.1:<port> to `target`. `cut_after(n, times)`: the next `times` connections are
    closed after n bytes from the server; `rate`: server -> client bytes per second (None: full speed)."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.rate: float | None = None
        self.cuts_left, self.cut_bytes = 0, 0
        self.cuts_done = 0
        self.bytes_to_client = 0
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, nbytes: int, times: int = 1) -> None:
        with self._lock:
            self.cut_bytes, self.cuts_left = nbytes, times

    def close(self) -> None:
        self._stop = True
        self.server.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                cut = self.cut_bytes if self.cuts_left > 0 else None
                self.cuts_left -= 1 if cut is not None else 0
            threading.Thread(target=self._pipe, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, cut), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, cut: int | None) -> None:
        sent = 0
        downstream = cut is not None or src.getpeername() == self.target
        try:
            while chunk := src.recv(65536):
                if cut is not None and sent + len(chunk) >= cut:
                    dst.sendall(chunk[: max(cut - sent, 0)])
                    with self._lock:
                        self.cuts_done += 1
                    break
                if downstream and self.rate:
                    time.sleep(len(chunk) / self.rate)
                dst.sendall(chunk)
                sent += len(chunk)
                if downstream:
                    with self._lock:
                        self.bytes_to_client += len(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
