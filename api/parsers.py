"""JSON parser that accepts gzip bodies and refuses oversized or deeply nested documents."""

from __future__ import annotations

import gzip
import io
import json
import zlib
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

MAX_DEPTH = 32


class RequestTooLarge(ParseError):
    status_code = 413
    default_code = "too_large"


def _depth_ok(text: str) -> bool:
    """Reject nesting before json.loads can recurse (deep nesting is a cheap DoS)."""
    depth = 0
    in_str = False
    esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return True


_NONFINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def read_body(stream: Any, parser_context: Any) -> bytes:
    """The request body, gunzipped when sent with `Content-Encoding: gzip`, within the size
    limit before and after decompression (a small gzip body can expand to gigabytes)."""
    request = (parser_context or {}).get("request")
    limit = settings.TRACKER_MAX_JSON_BODY
    raw = stream.read(limit + 1) if stream is not None else b""
    if len(raw) > limit:
        raise RequestTooLarge(f"JSON bodies are at most {limit} bytes.")
    encoding = request.META.get("HTTP_CONTENT_ENCODING", "") if request is not None else ""
    if encoding.lower() == "gzip":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
                raw = gz.read(limit + 1)
        except (OSError, EOFError, zlib.error):
            raise ParseError("Body is not valid gzip.") from None
        if len(raw) > limit:
            raise RequestTooLarge(f"Decompressed JSON bodies are at most {limit} bytes.")
    return raw


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:  # type: ignore[no-untyped-def]
        raw = read_body(stream, parser_context)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Body is not UTF-8.") from None
        if text.count("[") + text.count("{") > MAX_DEPTH and not _depth_ok(text):
            raise ParseError(f"JSON nesting deeper than {MAX_DEPTH} levels.")
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"JSON parse error: {exc}") from None


def _reject_constant(name: str) -> float:
    # Bare NaN/Infinity are not JSON; the metrics contract uses the strings "NaN", "Infinity".
    raise ValueError(f'bare {name} is not JSON; send the string "{name}"')


def nonfinite(value: Any) -> float | None:
    """Decode a metric value: a JSON number or one of the strings NaN / Infinity / -Infinity."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _NONFINITE.get(value)
    return None
