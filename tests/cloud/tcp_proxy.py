"""A loopback TCP proxy that can make a server go silent without closing anything.

``stall()`` turns every connection through it, and every new one, into a black hole: the
sockets stay open and the kernel keeps acknowledging what the client sends (so TCP keepalives
are answered too), but nothing is forwarded and nothing comes back -- a server that hangs, or
a half-open connection behind a NAT that lost its state. ``resume()`` makes new connections
work again; the stalled ones stay dead, as they would in life.
"""
from __future__ import annotations

import socket
import threading


class StallingProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[dict] = []
        self._stalled = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        with self._lock:
            self._stalled = True
            for pair in self._pairs:
                pair["dead"] = True

    def resume(self) -> None:
        with self._lock:
            self._stalled = False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                pair = {"client": client, "server": None, "dead": self._stalled}
                self._pairs.append(pair)
            if pair["dead"]:
                continue  # accepted, never answered
            try:
                pair["server"] = socket.create_connection(self.target, timeout=5)
                pair["server"].settimeout(None)
            except OSError:
                client.close()
                continue
            for src, dst in ((client, pair["server"]), (pair["server"], client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(self, pair: dict, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.1)
        while not self._closed:
            if pair["dead"]:
                return  # stop reading: the socket stays open and silent
            try:
                data = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data or pair["dead"]:
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for pair in self._pairs:
                for s in (pair["client"], pair["server"]):
                    if s is not None:
                        s.close()
