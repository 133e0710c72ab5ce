import email.utils
import time

import pytest
from tracker_client.http import (
    ApiError,
    HttpClient,
    RetryPolicy,
    TrackerUnreachable,
    backoff_delay,
    is_retryable_status,
    parse_retry_after,
    retry_call,
)


def test_retryable_statuses():
    assert all(is_retryable_status(s) for s in (408, 429, 500, 502, 503, 504))
    assert not is_retryable_status(409)  # artifact_exists, not_pending...: a retry cannot help
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 413, 422))


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after(future) <= 31


def test_backoff_grows_with_jitter_and_respects_retry_after():
    delays = [backoff_delay(a, base=0.5, cap=8) for a in range(8)]
    assert all(0.25 <= d <= 8 for d in delays)
    assert delays[-1] >= 4  # capped growth
    assert 5.0 <= backoff_delay(0, retry_after=5.0) <= 5.1


def test_retry_call_retries_transient_then_raises_permanent():
    attempts = []

    def flaky(attempt):
        attempts.append(attempt)
        if attempt < 2:
            raise ApiError(503, "unavailable", "later")
        return "ok"

    assert retry_call(flaky, RetryPolicy(base=0.001, cap=0.01)) == "ok"
    assert attempts == [0, 1, 2]

    def permanent(attempt):
        attempts.append(attempt)
        raise ApiError(404, "not_found", "nope")

    attempts.clear()
    with pytest.raises(ApiError):
        retry_call(permanent, RetryPolicy(base=0.001))
    assert attempts == [0]


def test_retry_call_gives_up_after_max_attempts():
    calls = []

    def down(attempt):
        calls.append(attempt)
        raise TrackerUnreachable("http://x")

    with pytest.raises(TrackerUnreachable):
        retry_call(down, RetryPolicy(max_attempts=3, base=0.001, cap=0.001))
    assert calls == [0, 1, 2]


def test_client_error_body_and_retries_against_stub(stub_server):
    answers = [
        (500, {}, {"error": {"code": "x", "message": "transient"}}),
        (200, {}, {"id": 1, "username": "alice"}),
    ]
    stub = stub_server(
        lambda req: (
            answers.pop(0)
            if answers
            else (
                403,
                {},
                {"error": {"code": "forbidden", "message": "not yours", "field": "project"}},
            )
        )
    )
    http = HttpClient(stub.url, "trk_x_y")
    assert http.call("GET", "/api/v1/me/", retry=RetryPolicy(base=0.01)) == {
        "id": 1,
        "username": "alice",
    }
    with pytest.raises(ApiError) as info:
        http.call("GET", "/api/v1/me/")
    err = info.value
    assert (err.status, err.code, err.message, err.field) == (
        403,
        "forbidden",
        "not yours",
        "project",
    )
    assert not err.retryable
    http.close()


def test_unreachable_is_typed(closed_port_url):
    http = HttpClient(closed_port_url, None)
    with pytest.raises(TrackerUnreachable) as info:
        http.request("GET", "/api/v1/me/")
    assert closed_port_url in str(info.value)
    http.close()
