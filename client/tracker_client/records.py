"""The unit of delivery: one request-to-be, fixed at formation time.

A Record is created once (sequence number, kind, Idempotency-Key, exact body bytes) and then
either kept in memory or written to the journal; every attempt and every replay — in this
process, after a restart, or from `tracker sync` — sends exactly those bytes with exactly that
key, which is what lets the server de-duplicate and makes delivery exactly-once.
"""

from __future__ import annotations

import gzip
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import columns
from .http import ApiError, HttpClient

# Kinds, in the order they usually appear in a run's life.
CREATE_RUN = "create_run"
PARAMS = "params"
PATCH = "patch"
METRICS = "metrics"  # JSON body: journals written before the columns encoding
METRIC_COLUMNS = "metric_columns"  # binary columns body (`columns`)
TEXT = "text"
IMAGES = "images"
HISTOGRAMS = "histograms"
PR_CURVES = "pr_curves"
ARTIFACT = "artifact"

METRIC_KINDS = frozenset({METRICS, METRIC_COLUMNS})
KINDS = frozenset(
    {
        CREATE_RUN,
        PARAMS,
        PATCH,
        METRICS,
        METRIC_COLUMNS,
        TEXT,
        IMAGES,
        HISTOGRAMS,
        PR_CURVES,
        ARTIFACT,
    }
)
_ITEM_ENDPOINTS = {TEXT: "text", HISTOGRAMS: "histograms", PR_CURVES: "pr-curves"}
_HEADER_LEN = struct.Struct("<I")


def new_key() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Record:
    kind: str
    seq: int
    key: str
    body: bytes
    blobs: list[bytes] = field(default_factory=list)
    count: int = 0  # points / items / images carried, for stats and progress bars

    @property
    def nbytes(self) -> int:
        return len(self.body) + sum(len(b) for b in self.blobs)

    def to_payload(self) -> bytes:
        header = json.dumps(
            {
                "v": 1,
                "kind": self.kind,
                "seq": self.seq,
                "key": self.key,
                "count": self.count,
                "sizes": [len(self.body)] + [len(b) for b in self.blobs],
            },
            separators=(",", ":"),
        ).encode()
        return b"".join([_HEADER_LEN.pack(len(header)), header, self.body, *self.blobs])

    @classmethod
    def from_payload(cls, payload: bytes | memoryview) -> Record:
        view = memoryview(payload)
        (hlen,) = _HEADER_LEN.unpack_from(view, 0)
        header = json.loads(bytes(view[4 : 4 + hlen]))
        pos = 4 + hlen
        parts: list[bytes] = []
        for size in header["sizes"]:
            parts.append(bytes(view[pos : pos + size]))
            pos += size
        if pos != len(view):
            raise ValueError("record payload size mismatch")
        return cls(
            kind=header["kind"],
            seq=int(header["seq"]),
            key=header["key"],
            body=parts[0],
            blobs=parts[1:],
            count=int(header.get("count", 0)),
        )

    def json_body(self) -> Any:
        return json.loads(self.body)


def json_record(kind: str, seq: int, body: Any, count: int = 0) -> Record:
    data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    return Record(kind=kind, seq=seq, key=new_key(), body=data, count=count)


class RunNotCreated(Exception):
    """A record other than create_run reached delivery before the run had a server id."""


def deliver(http: HttpClient, record: Record, run_id: int | None) -> Any:
    """One attempt at sending a record; returns the decoded response (raises on failure).

    `artifact` records are not handled here: they need the upload machinery and are routed to
    `artifacts.deliver_artifact_record` by the callers.
    """
    idem = {"Idempotency-Key": record.key}
    kind = record.kind
    if kind == CREATE_RUN:
        body = record.json_body()
        project = body["project"]
        response = http.request(
            "POST",
            f"/api/v1/projects/{project}/runs/",
            json_body=body["create"],
            headers=idem,
        )
        return response.json()
    if run_id is None:
        raise RunNotCreated(kind)
    base = f"/api/v1/runs/{run_id}"
    json_headers = {"Content-Type": "application/json", **idem}
    if kind == METRIC_COLUMNS:
        response = _send_columns(http, f"{base}/metrics/", record, idem)
    elif kind == METRICS:
        headers = {**json_headers, "Content-Encoding": "gzip"}
        response = http.request("POST", f"{base}/metrics/", content=record.body, headers=headers)
    elif kind in _ITEM_ENDPOINTS:
        response = http.request(
            "POST", f"{base}/{_ITEM_ENDPOINTS[kind]}/", content=record.body, headers=json_headers
        )
    elif kind == PARAMS:
        response = http.request(
            "POST", f"{base}/params/", content=record.body, headers=json_headers
        )
    elif kind == PATCH:
        response = http.request("PATCH", f"{base}/", content=record.body, headers=json_headers)
    elif kind == IMAGES:
        meta = record.json_body()
        files = [
            (item["field"], (f"{item['field']}.{_ext(item.get('mime'))}", blob, item.get("mime")))
            for item, blob in zip(meta, record.blobs, strict=True)
        ]
        response = http.request(
            "POST",
            f"{base}/images/",
            data={"meta": record.body.decode()},
            files=files,
            headers=idem,
        )
    else:
        raise ValueError(f"cannot deliver record kind {kind!r} here")
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def gzip_body(data: bytes) -> bytes:
    # Level 1: a metrics batch (columns or JSON) shrinks ~4x even at the fastest level, and
    # CPU is what we lack.
    return gzip.compress(data, compresslevel=1, mtime=0)


def _send_columns(http: HttpClient, url: str, record: Record, idem: dict[str, str]) -> Any:
    headers = {"Content-Type": columns.MEDIA_TYPE, "Content-Encoding": "gzip", **idem}
    try:
        return http.request("POST", url, content=record.body, headers=headers)
    except ApiError as exc:
        if exc.status != 415:
            raise
    # A server older than the columns encoding: the same points as JSON, under the same key.
    body = gzip_body(columns.to_json(gzip.decompress(record.body)))
    headers["Content-Type"] = "application/json"
    return http.request("POST", url, content=body, headers=headers)


def _ext(mime: str | None) -> str:
    return {"image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}.get(mime or "", "png")
