"""Shared fixtures: an isolated config/cache per test and a tiny scripted HTTP stub.

The stub is a network test double (canned answers per request, every request recorded); it
knows nothing of Tracker's semantics. End-to-end tests against the real server live elsewhere.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tracker_client import columns


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test may read or write the real ~/.config/tracker or ~/.cache/tracker."""
    for name in ("TRACKER_URL", "TRACKER_TOKEN", "TRACKER_PROJECT", "TRACKER_OFFLINE_GRACE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRACKER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("TRACKER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TRACKER_SILENT", "1")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
    from tracker_client import run as run_module

    for active in list(run_module._active):  # never leak background threads between tests
        active.finish()


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        data = self.body
        if self.headers.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        if self.headers.get("content-type") == columns.MEDIA_TYPE:
            return {"series": columns.decode(data)}
        return json.loads(data)


def metric_series(record: Any) -> list[dict[str, Any]] | None:
    """The series of a journaled metrics record, either wire form; None for other kinds."""
    if record.kind == "metric_columns":
        return columns.decode(gzip.decompress(record.body))
    if record.kind == "metrics":
        return json.loads(gzip.decompress(record.body))["series"]
    return None


Reply = tuple[int, dict[str, str], Any]
Handler = Callable[[Request], Reply]


@dataclass
class Stub:
    url: str
    requests: list[Request] = field(default_factory=list)
    handler: Handler | None = None
    server: ThreadingHTTPServer | None = None
    connections: list[socket.socket] = field(default_factory=list)

    def stop(self) -> None:
        """Stop like a crashed server: listener closed and open keep-alive connections cut."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connections.clear()

    def matching(self, method: str, suffix: str) -> list[Request]:
        return [
            r for r in self.requests if r.method == method and r.path.split("?")[0].endswith(suffix)
        ]


def _make_handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class _H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def setup(self) -> None:
            super().setup()
            stub.connections.append(self.connection)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            req = Request(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            stub.requests.append(req)
            status, headers, payload = stub.handler(req) if stub.handler else (200, {}, {})
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            headers = {"Content-Type": "application/json", **headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return _H


@pytest.fixture
def stub_server():
    """Factory: stub_server(handler) -> Stub listening on 127.0.0.1."""
    servers: list[ThreadingHTTPServer] = []

    def start(handler: Handler | None = None, port: int = 0, stub: Stub | None = None) -> Stub:
        stub = stub or Stub(url="")
        stub.handler = handler or stub.handler
        server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(stub))
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        stub.server = server
        servers.append(stub)
        stub.url = f"http://127.0.0.1:{server.server_address[1]}"
        return stub

    yield start
    for stub in servers:
        stub.stop()


def parse_multipart(req: Request) -> tuple[list[dict], dict[str, bytes]]:
    """(meta list, {field name: file bytes}) of an images request."""
    from email.parser import BytesParser

    msg = BytesParser().parsebytes(
        b"Content-Type: " + req.headers["content-type"].encode() + b"\r\n\r\n" + req.body
    )
    meta: list[dict] = []
    files: dict[str, bytes] = {}
    for part in msg.get_payload():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if name == "meta":
            meta = json.loads(data)
        else:
            files[name] = data
    return meta, files


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (connection refused at once)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def run_created(req: Request, run_id: int = 7) -> Reply:
    return 201, {}, {"id": run_id, "name": "r", "project": "ws/p", "url": f"http://ui/r/{run_id}"}
