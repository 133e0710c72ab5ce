"""Fault-injection helpers: a private redis-server, a TCP proxy that can cut and refuse
connections, and an HTTP proxy that answers 5xx or stalls. All on 127.0.0.1, all bounded.
Django-free: bench/faults/offline_client.py imports TcpProxy before django.setup()."""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import threading
import time
from typing import Any

from bench.harness import free_port, wait_port
from tests.conftest import ARTIFACTS


class RedisServer:
    """A throw-away redis-server that keeps nothing on disk (like the production one)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        ARTIFACTS.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(ARTIFACTS),
            ],
            stdout=open(ARTIFACTS / f"redis-{self.port}.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def queue_length(self, queue: str = "celery") -> int:
        import redis

        return int(redis.Redis(port=self.port).llen(queue))


class TcpProxy:
    """127.0.0.1:<port> → upstream. `outage()` cuts every open connection and refuses new ones
    (accepts and closes at once, like a restarting server) until `restore()`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.down = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.cuts = 0
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            if self.down.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while not self.closed.is_set():
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def outage(self) -> None:
        self.down.set()
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            self.cuts += 1
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.closed.set()
        self.outage()
        self.sock.close()


class FaultyHttpProxy:
    """HTTP/1.1 reverse proxy in front of an S3 server with injectable faults.

    `fail_next(n, status)` answers the next n requests itself with an S3-style error;
    `delay = s` stalls every response s seconds; `down = True` answers everything with 503.
    """

    def __init__(self, upstream_port: int) -> None:
        import http.client
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.failures_left = 0
        self.fail_status = 500
        self.delay = 0.0
        self.down = False
        self.requests = 0
        self.injected = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = proxy._fault()
                if proxy.delay:
                    time.sleep(proxy.delay)
                if status:
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
                        b"<Message>injected fault</Message></Error>"
                    )
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"  # keeps the upstream Content-Length
                for k, v in resp.getheaders():
                    skip = ("transfer-encoding", "connection") + (
                        () if head else ("content-length",)
                    )
                    if k.lower() not in skip:
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _fault(self) -> int:
        with self.lock:
            self.requests += 1
            if self.down:
                self.injected += 1
                return 503
            if self.failures_left > 0:
                self.failures_left -= 1
                self.injected += 1
                return self.fail_status
        return 0

    def fail_next(self, n: int, status: int = 500) -> None:
        with self.lock:
            self.failures_left, self.fail_status = n, status

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
