"""The binary column encoding of a metrics batch (`application/vnd.tracker.columns`).

JSON spends most of a metrics batch's CPU, on both ends, printing and parsing floats: 25,000
points cost the client ~10 ms to encode and the server ~8 ms to gunzip, parse and convert. As
columns of little-endian int64/float64 they cost ~1.5 ms and ~0.5 ms, and gzip to under half the
bytes (steps and wall times shared by the keys logged together are sent once). Layout, in
docs/api-contract.md:

    "TKC1"  u32 header length H  header (UTF-8 JSON)  zero padding to a multiple of 8
    column 0, column 1, ... (n × 8 bytes each, little-endian, no gaps)

    header: {"columns": [{"dtype": "i8" | "f8", "n": n}, ...],
             "series": [{"key": str, "steps": i, "values": j, "wall_times": k | null}, ...]}

A series names its columns by index; steps are an i8 column, values and wall times f8 columns.
Values may be NaN/±inf (that is the point of float64). Everything else about the numbers
(steps >= 0, finite wall times, limits, a key in several series concatenated in order) is the
JSON form's rule, applied to both by `logging.parse_metric_columns`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import orjson

from .errors import ServiceError, TooLarge
from .runs import check_key

MEDIA_TYPE = "application/vnd.tracker.columns"
MAGIC = b"TKC1"
_PREFIX = struct.Struct("<4sI")
MAX_HEADER = 1 << 20
MAX_COLUMNS = 3_000  # steps, walls and values for each of the 1,000 series a batch may hold
_DTYPES = {"i8": np.dtype("<i8"), "f8": np.dtype("<f8")}
_NATIVE = {"i8": np.int64, "f8": np.float64}


def _bad(message: str, field: str = "body") -> ServiceError:
    return ServiceError(message, field=field)


def _header(raw: bytes) -> tuple[dict[str, Any], int]:
    """The decoded header and the offset of the first column."""
    if len(raw) < _PREFIX.size or raw[:4] != MAGIC:
        raise _bad(f'A columns body starts with the 4 bytes "{MAGIC.decode()}" and a u32 length.')
    _, hlen = _PREFIX.unpack_from(raw)
    if hlen > MAX_HEADER or _PREFIX.size + hlen > len(raw):
        raise _bad(f"The header length ({hlen} bytes) runs past the end of the body.")
    try:
        header = orjson.loads(raw[_PREFIX.size : _PREFIX.size + hlen])
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The header is not JSON: {exc}.", "header") from None
    if not isinstance(header, dict):
        raise _bad('The header is an object {"columns": [...], "series": [...]}.', "header")
    start = _PREFIX.size + hlen
    return header, start + (-start) % 8


def _columns(raw: bytes, header: Mapping[str, Any], offset: int) -> list[np.ndarray]:
    specs = header.get("columns")
    if not isinstance(specs, list):
        raise _bad('"columns" must be a list.', "columns")
    if len(specs) > MAX_COLUMNS:
        raise TooLarge(f"At most {MAX_COLUMNS} columns per request.", field="columns")
    arrays: list[np.ndarray] = []
    pos = offset
    for i, spec in enumerate(specs):
        where = f"columns[{i}]"
        if not isinstance(spec, Mapping):
            raise _bad(f'{where} must be an object {{"dtype": "i8"|"f8", "n": int}}.', where)
        dtype, n = spec.get("dtype"), spec.get("n")
        if dtype not in _DTYPES:
            raise _bad(f'{where}.dtype must be "i8" or "f8", got {dtype!r}.', where)
        if type(n) is not int or not 0 <= n <= len(raw):
            raise _bad(f"{where}.n must be an integer >= 0, got {n!r}.", where)
        if pos + 8 * n > len(raw):
            raise _bad(f"{where} runs past the end of the body ({len(raw)} bytes).", where)
        # A view on the request bytes (no copy); astype makes it native-endian on any host.
        arr = np.frombuffer(raw, dtype=_DTYPES[dtype], count=n, offset=pos)
        arrays.append(arr.astype(_NATIVE[dtype], copy=False))
        pos += 8 * n
    if pos != len(raw):
        raise _bad(f"The body is {len(raw)} bytes but its header describes {pos}.")
    return arrays


Series = tuple[str, str, np.ndarray, np.ndarray, np.ndarray | None]


def decode_columns(raw: bytes, max_series: int) -> Iterator[Series]:
    """The series of a columns body, in order, as (where, key, steps, values, wall_times or
    None): the layout is checked here (header, dtypes, bounds, column references, key charset);
    the rules on the numbers are the JSON form's, applied by the caller."""
    header, offset = _header(raw)
    arrays = _columns(raw, header, offset)
    series = header.get("series")
    if not isinstance(series, list):
        raise _bad('"series" must be a list.', "series")
    if len(series) > max_series:
        raise TooLarge(f"At most {max_series} series per request.", field="series")

    def column(item: Mapping[str, Any], name: str, dtype: str, where: str) -> np.ndarray:
        ref = item.get(name)
        if type(ref) is not int or not 0 <= ref < len(arrays):
            raise _bad(f"{where}.{name} must be a column index, got {ref!r}.", f"{where}.{name}")
        if arrays[ref].dtype != _NATIVE[dtype]:
            raise _bad(f'{where}.{name} must be an "{dtype}" column.', f"{where}.{name}")
        return arrays[ref]

    for i, item in enumerate(series):
        where = f"series[{i}]"
        if not isinstance(item, Mapping):
            raise _bad(f"{where} must be an object.", where)
        key = check_key(item.get("key"), f"{where}.key")
        steps = column(item, "steps", "i8", where)
        values = column(item, "values", "f8", where)
        walls = None
        if item.get("wall_times") is not None:
            walls = column(item, "wall_times", "f8", where)
        yield where, key, steps, values, walls
