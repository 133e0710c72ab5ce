"""HTTP layer shared by the live logger, artifact uploads, `tracker upload` and the read API.

One `httpx.Client` per (server, token, process): connection keep-alive matters far more than
anything else for small batch requests, and httpx clients are safe to share between threads.
Retry policy lives here too so that every caller backs off the same way (exponential with
jitter, Retry-After honoured), which keeps a fleet of clients from hammering a recovering server
in lock-step.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from ._version import __version__

logger = logging.getLogger("tracker_client")

USER_AGENT = f"tracker-client/{__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)

T = TypeVar("T")


class TrackerError(Exception):
    """Base class of every error the client raises on purpose."""


class TrackerUnreachable(TrackerError):
    """No HTTP response at all: DNS, refused connection, timeout, reset."""

    def __init__(self, url: str, cause: BaseException | None = None) -> None:
        self.url = url
        self.cause = cause
        detail = f": {cause}" if cause and str(cause) else ""
        kind = type(cause).__name__ if cause else "error"
        super().__init__(f"cannot reach Tracker at {url} ({kind}{detail})")


class ApiError(TrackerError):
    """The server answered with a 4xx/5xx; carries the contract's error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        method: str = "",
        url: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.body = body
        self.retry_after = retry_after
        self.method = method
        self.url = url
        where = f" (field {field!r})" if field else ""
        super().__init__(f"HTTP {status} {code}: {message}{where}")

    @property
    def retryable(self) -> bool:
        return is_retryable_status(self.status)

    @property
    def expected_offset(self) -> int | None:
        """For 409 offset_mismatch answers of the chunked upload endpoints."""
        err = self.body.get("error") if isinstance(self.body, dict) else None
        for source in (err, self.body):
            if isinstance(source, dict) and isinstance(source.get("expected_offset"), int):
                return int(source["expected_offset"])
        return None


def is_retryable_status(status: int) -> bool:
    """408/429 and 5xx are transient; every other 4xx means the request itself is wrong.

    409 is not: the server answers it for states a retry cannot change (an artifact path holding
    other content, a finished upload, the last owner); a concurrent retry of the same
    Idempotency-Key waits for the first and replays its answer instead. The chunked upload
    callers follow `offset_mismatch` 409s themselves.
    """
    return status in (408, 429) or status >= 500


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, retry_after: float | None = None
) -> float:
    """Delay before retry number `attempt` (0-based): exponential with "equal jitter".

    Half of the exponential ceiling is fixed so a retry never comes back immediately, the other
    half is random so many clients spread out; Retry-After, when the server sends one, wins.
    """
    ceiling = min(cap, base * (2**attempt))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        # A server that names a time gets it, plus a little jitter so clients do not return at
        # the same instant; still bounded so a bogus header cannot stall us for hours.
        delay = min(max(retry_after, 0.0), 300.0) + random.uniform(0, 0.1 * ceiling)
    return delay


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds for `retry_call`; None means unbounded on that axis."""

    max_attempts: int | None = 6
    max_elapsed: float | None = 60.0
    base: float = 0.5
    cap: float = 30.0


DEFAULT_RETRY = RetryPolicy()
# Interactive use (CLI, read API): a person is waiting, so fail within seconds, not a minute.
INTERACTIVE_RETRY = RetryPolicy(max_attempts=3, max_elapsed=10.0, base=0.3, cap=4.0)
NO_RETRY = RetryPolicy(max_attempts=1)


def retry_call(
    fn: Callable[[int], T],
    policy: RetryPolicy = DEFAULT_RETRY,
    *,
    sleep: Callable[[float], Any] = time.sleep,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Call fn(attempt) until it returns, retrying transient failures with backoff.

    Transient = `TrackerUnreachable` or an `ApiError` whose status is retryable. The caller
    owns anything that must stay fixed across attempts (the Idempotency-Key in particular).
    """
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn(attempt)
        except (TrackerUnreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and not exc.retryable:
                raise
            retry_after = exc.retry_after if isinstance(exc, ApiError) else None
            delay = backoff_delay(
                attempt, base=policy.base, cap=policy.cap, retry_after=retry_after
            )
            attempt += 1
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise
            if (
                policy.max_elapsed is not None
                and time.monotonic() - start + delay > policy.max_elapsed
            ):
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            else:
                logger.debug("retry %d in %.2fs after %s", attempt, delay, exc)
            sleep(delay)


def error_from_response(response: httpx.Response) -> ApiError:
    """Build an ApiError from a non-2xx response using the contract's error envelope."""
    body: Any = None
    code = f"http_{response.status_code}"
    message = response.reason_phrase or "error"
    field = None
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        try:
            text = response.text.strip()
        except (httpx.ResponseNotRead, UnicodeDecodeError):
            text = ""
        if text:
            message = text[:300]
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code = str(err.get("code") or code)
            message = str(err.get("message") or message)
            field = err.get("field")
        elif isinstance(body.get("detail"), str):  # DRF's default shape, just in case
            message = body["detail"]
    return ApiError(
        response.status_code,
        code,
        message,
        field=field,
        body=body,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
        method=response.request.method if response.request else "",
        url=str(response.request.url) if response.request else "",
    )


class HttpClient:
    """Thin wrapper over httpx.Client: base URL, auth, User-Agent, typed errors, retries."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self._client = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            limits=limits,
            follow_redirects=False,
            transport=transport,
        )
        # Presigned object-store URLs must never see our bearer token.
        self.plain = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=limits,
            follow_redirects=True,
            transport=transport,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        files: Any = None,
        data: Any = None,
        timeout: httpx.Timeout | float | None = None,
    ) -> httpx.Response:
        """One attempt. Returns a 2xx/3xx response; raises ApiError / TrackerUnreachable."""
        kwargs: dict[str, Any] = {}
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":"), allow_nan=False).encode()
            merged = {"Content-Type": "application/json"}
            merged.update(headers or {})
            headers = merged
        if content is not None:
            kwargs["content"] = content
        if files is not None:
            kwargs["files"] = files
        if data is not None:
            kwargs["data"] = data
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._client.request(method, path, params=params, headers=headers, **kwargs)
        except httpx.TransportError as exc:  # connect/read/write errors and timeouts
            raise TrackerUnreachable(self.url, exc) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def call(
        self,
        method: str,
        path: str,
        *,
        retry: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> Any:
        """Request with retries (the client's policy unless given); returns the decoded JSON
        body (None when empty)."""

        def attempt(_: int) -> httpx.Response:
            return self.request(method, path, **kwargs)

        response = retry_call(attempt, retry or self.retry)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    def paginate(
        self, path: str, params: Mapping[str, Any] | None = None, *, limit: int | None = None
    ) -> Iterator[Any]:
        """Yield items of a paginated list, following the absolute `next` URLs."""
        url: str | None = path
        query: Mapping[str, Any] | None = params
        seen = 0
        while url:
            page = self.call("GET", url, params=query)
            query = None  # `next` already carries the query string
            if isinstance(page, list):  # tolerate unpaginated lists
                items, url = page, None
            else:
                items, url = (page or {}).get("results", []), (page or {}).get("next")
            for item in items:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return

    def stream(self, method: str, path: str, **kwargs: Any) -> Any:
        """Context manager yielding a streaming response (errors raised before yielding)."""
        return _StreamCtx(self, self._client, method, path, kwargs)

    def close(self) -> None:
        self._client.close()
        self.plain.close()


class _StreamCtx:
    def __init__(
        self, owner: HttpClient, client: httpx.Client, method: str, path: str, kw: dict
    ) -> None:
        self._owner = owner
        self._client = client
        self._args = (method, path)
        self._kw = kw
        self._cm: Any = None

    def __enter__(self) -> httpx.Response:
        self._cm = self._client.stream(*self._args, **self._kw)
        try:
            response = self._cm.__enter__()
        except httpx.TransportError as exc:
            raise TrackerUnreachable(self._owner.url, exc) from exc
        if response.status_code >= 400:
            response.read()
            err = error_from_response(response)
            self._cm.__exit__(None, None, None)
            raise err
        return response

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


_clients: dict[tuple[str, str | None, int, bool], HttpClient] = {}
_clients_lock = threading.Lock()


def get_client(url: str, token: str | None, *, interactive: bool = False) -> HttpClient:
    """The process-wide client for this server and token (re-created after fork)."""
    key = (url.rstrip("/"), token, os.getpid(), interactive)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            retry = INTERACTIVE_RETRY if interactive else DEFAULT_RETRY
            client = _clients[key] = HttpClient(url, token, retry=retry)
        return client
