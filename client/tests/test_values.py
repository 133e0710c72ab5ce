import json
import math

import numpy as np
import pytest
import torch
from tracker_client._values import (
    coerce_step,
    coerce_value,
    decode_value,
    flatten_params,
    json_float,
    sanitize_key,
    validate_key,
    validate_tags,
)


def test_flatten_nested_params():
    flat = flatten_params(
        {
            "lr": 3e-4,
            "opt": {"name": "adam", "betas": {"b1": 0.9}},
            "bs": 32,
            "aug": True,
            "seed": None,
        }
    )
    assert flat == {
        "lr": 3e-4,
        "opt/name": "adam",
        "opt/betas/b1": 0.9,
        "bs": 32,
        "aug": True,
        "seed": None,
    }


def test_params_accept_numpy_and_torch_scalars():
    flat = flatten_params(
        {"a": np.float32(0.5), "b": np.int64(3), "c": torch.tensor(2.5), "d": np.bool_(True)}
    )
    assert flat == {"a": 0.5, "b": 3, "c": 2.5, "d": True}
    assert type(flat["b"]) is int


def test_params_nonfinite_become_strings():
    flat = flatten_params({"a": math.nan, "b": math.inf, "c": -math.inf})
    assert flat == {"a": "NaN", "b": "Infinity", "c": "-Infinity"}
    json.dumps(flat, allow_nan=False)


def test_params_accept_lists_and_tuples():
    import numpy as np

    flat = flatten_params(
        {"layers": [64, 128], "betas": (0.9, np.float32(0.5)), "grid": [[1, "a"], []]}
    )
    assert flat == {"layers": [64, 128], "betas": [0.9, 0.5], "grid": [[1, "a"], []]}
    assert flatten_params({"w": np.array([1, 2])}) == {"w": [1, 2]}


@pytest.mark.parametrize("value", [[1, {2}], {1, 2}, object(), b"x", 1j, [object()]])
def test_params_reject_other_types_with_clear_error(value):
    with pytest.raises(TypeError, match=r"param 'x'.*unsupported type"):
        flatten_params({"x": value})


def test_params_reject_bad_keys():
    with pytest.raises(TypeError, match="keys must be str"):
        flatten_params({1: 2})
    with pytest.raises(ValueError, match="invalid param key"):
        flatten_params({"bad\nkey": 1})
    with pytest.raises(ValueError):
        flatten_params({"a" * 256: 1})
    with pytest.raises(TypeError, match="must be a dict"):
        flatten_params([("a", 1)])


def test_key_charset():
    for ok in ("loss", "train/loss", "a.b:c-d_e f", "x" * 255):
        assert validate_key(ok) == ok
    for bad in ("", "é", "a\tb", "x" * 256, "a?b"):
        with pytest.raises(ValueError):
            validate_key(bad)
    assert sanitize_key("Loss (train)%") == "Loss _train__"
    assert sanitize_key("") == "_"


def test_json_float_nonfinite_as_strings():
    text = json.dumps(
        [json_float(v) for v in [0.5, math.nan, math.inf, -math.inf, 3, 1e-5, -2.5e300]]
    )
    assert json.loads(text) == [0.5, "NaN", "Infinity", "-Infinity", 3, 1e-5, -2.5e300]
    assert [decode_value(v) for v in json.loads(text)][2] == math.inf
    assert math.isnan(decode_value("NaN"))


def test_coerce_value():
    assert coerce_value(True) == 1
    assert coerce_value(np.float64(0.25)) == 0.25
    assert coerce_value(np.int32(7)) == 7 and type(coerce_value(np.int32(7))) is int
    assert coerce_value(torch.tensor(1.5)) == 1.5
    assert coerce_value(np.array(2.0)) == 2.0
    with pytest.raises(TypeError, match="log_text"):
        coerce_value("0.5", "k")
    with pytest.raises(TypeError, match="expected a number"):
        coerce_value([1.0], "k")
    with pytest.raises(TypeError):
        coerce_value(torch.ones(3), "k")


def test_coerce_step():
    assert coerce_step(np.int64(5)) == 5
    assert coerce_step(3.0) == 3
    for bad, exc in (
        (-1, ValueError),
        (2**63, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("1", TypeError),
    ):
        with pytest.raises(exc):
            coerce_step(bad)


def test_validate_tags():
    assert validate_tags(["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(TypeError):
        validate_tags("abc")
    with pytest.raises(TypeError):
        validate_tags(["", "x"])
