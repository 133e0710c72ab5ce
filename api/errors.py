"""One error shape for every 4xx/5xx: {"error": {"code", "message", "field"?}}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from tracker.access import NotAllowed, NotVisible
from tracker.services.errors import ServiceError, is_backend_unavailable

log = logging.getLogger(__name__)

NOT_FOUND = {"error": {"code": "not_found", "message": "Not found."}}


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    err.update(extra)
    return {"error": err}


def _first_validation_error(detail: Any, path: str = "") -> tuple[str | None, str]:
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub = key if key != "non_field_errors" else ""
            field, msg = _first_validation_error(
                value, f"{path}.{sub}" if path and sub else sub or path
            )
            return field, msg
    if isinstance(detail, list) and detail:
        for i, item in enumerate(detail):
            if isinstance(item, dict | list):
                return _first_validation_error(item, f"{path}[{i}]" if path else str(i))
            return path or None, str(item)
    return path or None, str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, NotVisible | Http404 | exceptions.NotFound):
        return Response(NOT_FOUND, status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, NotAllowed):
        return Response(error_body("forbidden", exc.message), status=status.HTTP_403_FORBIDDEN)
    if isinstance(exc, ServiceError):
        return Response(
            error_body(exc.code, exc.message, exc.field, **exc.extra), status=exc.status
        )
    if isinstance(exc, DjangoValidationError):
        field = None
        if hasattr(exc, "error_dict"):
            field = next(iter(exc.error_dict), None)
        return Response(error_body("invalid", "; ".join(exc.messages), field), status=400)
    if is_backend_unavailable(exc):
        # The database or the blob store is unreachable or failing: nothing the caller did
        # wrong, and nothing was stored (rows are written after blobs, in transactions).
        # 503 + Retry-After tells clients to retry (with their Idempotency-Key).
        log.warning("service unavailable: %s: %s", type(exc).__name__, exc)
        response = Response(
            error_body("unavailable", "A backing service is unavailable; retry shortly."),
            status=503,
        )
        response["Retry-After"] = "2"
        return response
    if isinstance(exc, DataError):
        # The database refused a value no validator caught (a NUL character, which PostgreSQL
        # text cannot hold, an over-long string, a number out of range): bad input, not a 500.
        log.info("database refused a value: %s", exc)
        return Response(
            error_body("invalid", "A value is not acceptable (too long, out of range or has NUL)."),
            status=400,
        )
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_validation_error(exc.detail)
        response.data = error_body("invalid", message, field)
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        message = (
            str(detail)
            if not isinstance(detail, dict | list)
            else _first_validation_error(detail)[1]
        )
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        extra = {}
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
            extra["retry_after"] = int(exc.wait)
        response.data = error_body(str(code), message, **extra)
    return response


def json_404(request, exception=None):  # type: ignore[no-untyped-def]
    if request.path.startswith("/api/"):
        return JsonResponse(NOT_FOUND, status=404)
    from django.shortcuts import render

    return render(request, "web/404.html", status=404)


def json_500(request):  # type: ignore[no-untyped-def]
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("server_error", "Internal error."), status=500)
    from django.shortcuts import render

    return render(request, "web/500.html", status=500)


def json_400(request, exception=None):  # type: ignore[no-untyped-def]
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_403(request, exception=None):  # type: ignore[no-untyped-def]
    return JsonResponse(error_body("forbidden", "Forbidden."), status=403)
