"""Validation and wire encoding of keys, values, steps and params.

Everything here runs either on the caller's hot path (so the common case must be a type check
and a set lookup) or in the background sender (so it may be thorough).
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Contract: `[A-Za-z0-9_./:-]` plus space, 1–255 chars, for params and series keys alike.
_KEY_RE = re.compile(r"[A-Za-z0-9_./:\- ]{1,255}\Z")
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_./:\- ]")
MAX_STEP = 2**63 - 1


def validate_key(key: Any, what: str = "key") -> str:
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}: {key!r}")
    if not _KEY_RE.match(key):
        raise ValueError(
            f"invalid {what} {key!r}: use 1-255 characters from A-Z a-z 0-9 _ . / : - and space"
        )
    return key


def sanitize_key(key: str) -> str:
    """Coerce a foreign tag (TensorBoard, Keras) into the key charset instead of failing."""
    key = _BAD_KEY_CHARS.sub("_", str(key))[:255]
    return key or "_"


def coerce_value(value: Any, key: str = "?") -> int | float:
    """A metric value as a plain int/float; numpy/torch/TF scalars are unwrapped."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str | bytes | bytearray):
        raise TypeError(f"metric {key!r}: value {value!r} is a string; use log_text() for text")
    try:
        return operator.index(value)  # numpy/torch integer scalars stay exact
    except (TypeError, ValueError, RuntimeError):
        pass
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"metric {key!r}: expected a number (int, float, numpy/torch scalar), "
            f"got {type(value).__name__}"
        ) from exc


def coerce_step(step: Any) -> int:
    if isinstance(step, bool):
        raise TypeError("step must be an integer, got bool")
    try:
        step = operator.index(step)
    except TypeError:
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        else:
            raise TypeError(f"step must be an integer, got {type(step).__name__}") from None
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"step must be in [0, 2**63), got {step}")
    return step


def json_float(value: float) -> float | str:
    """Non-finite floats as the contract's strings; JSON has no NaN/Infinity literals."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def decode_value(value: Any) -> float | int:
    """Inverse of the wire encoding (used by the read API and tests)."""
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return value


ParamValue = None | bool | int | float | str | list[Any]


def _param_value(key: str, value: Any) -> ParamValue:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return json_float(float(value))
    if isinstance(value, numbers.Real):  # numpy scalars, Fraction
        item = value.item() if hasattr(value, "item") else value
        if isinstance(item, bool | int):
            return item
        return json_float(float(item))
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # 0-d array / tensor
        return _param_value(key, value.item())
    # Lists and tuples (layer sizes, Adam's betas) are stored as JSON lists, as the server
    # does; sets have no order and other objects no faithful JSON form.
    if isinstance(value, list | tuple):
        return [_param_value(key, v) for v in value]
    if hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:  # 1-d array / tensor
        return _param_value(key, value.tolist())
    raise TypeError(
        f"param {key!r}: unsupported type {type(value).__name__}; params must be numbers, "
        "strings, bools, None, lists of those or nested dicts (convert other objects with "
        "str() or json.dumps())"
    )


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, ParamValue]:
    """Flatten nested dicts into `a/b` keys and validate every key and value."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    out: dict[str, ParamValue] = {}
    for raw_key, value in params.items():
        if not isinstance(raw_key, str):
            raise TypeError(f"param keys must be str, got {type(raw_key).__name__}: {raw_key!r}")
        key = f"{prefix}/{raw_key}" if prefix else raw_key
        if isinstance(value, Mapping):
            if not value:
                continue
            out.update(flatten_params(value, key))
            continue
        validate_key(key, "param key")
        out[key] = _param_value(key, value)
    return out


def validate_tags(tags: Iterable[Any]) -> list[str]:
    if isinstance(tags, str):
        raise TypeError("tags must be a list of strings, not a single string")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise TypeError(f"tags must be non-empty strings, got {tag!r}")
        if len(tag) > 255:
            raise ValueError(f"tag too long ({len(tag)} > 255 chars)")
        if tag not in out:
            out.append(tag)
    return out
