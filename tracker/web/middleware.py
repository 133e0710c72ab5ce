"""Security headers for every response (CSP without inline scripts, nosniff, no referrer leak)
and a 503 page instead of a 500 while the database or the blob store is down."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from tracker.services.errors import is_backend_unavailable

log = logging.getLogger(__name__)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # Share-link URLs carry a secret: never send it to other sites in a Referer.
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path.startswith("/s/"):
            response.headers["Referrer-Policy"] = "no-referrer"
            response.headers.setdefault("Cache-Control", "private, no-store")
        return response


class ServiceUnavailableMiddleware:
    """A page that failed because PostgreSQL or S3 is unreachable gets a 503 with Retry-After
    (the API does the same in api/errors.py): the user retries, monitoring sees an outage
    rather than a bug. Other exceptions stay 500s."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not is_backend_unavailable(exc):
            return None
        log.warning("service unavailable: %s: %s", type(exc).__name__, exc)
        response = HttpResponse(render_to_string("web/503.html"), status=503)
        response["Retry-After"] = "5"
        return response
