"""Idempotency-Key handling for batch writes: a retried request returns the first response."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import IdempotencyRecord
from .errors import ServiceError

KEY_RE = re.compile(r"^[A-Za-z0-9_.:\-]{8,100}$")
RETENTION = timedelta(days=7)


def run_once(
    scope: str, key: str | None, work: Callable[[], tuple[int, Any]]
) -> tuple[int, Any, bool]:
    """Run `work` (returning status, body) once per (scope, key), in one transaction with the
    record, so the data and the record commit together or not at all.

    Returns (status, body, replayed).
    """
    if not key:
        status, body = work()
        return status, body, False
    if not KEY_RE.match(key):
        raise ServiceError(
            "Idempotency-Key is 8-100 characters of letters, digits and _ . : -",
            field="Idempotency-Key",
        )
    found = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
    if found is not None:
        return found.status_code, found.response, True
    try:
        with transaction.atomic():
            status, body = work()
            IdempotencyRecord.objects.create(
                scope=scope, key=key, status_code=status, response=body
            )
    except IntegrityError:
        # A concurrent request with the same key won the race; its data is stored: replay it.
        found = IdempotencyRecord.objects.filter(scope=scope, key=key).first()
        if found is None:
            raise
        return found.status_code, found.response, True
    return status, body, False


def purge_expired() -> int:
    deleted, _ = IdempotencyRecord.objects.filter(
        created_at__lt=timezone.now() - RETENTION
    ).delete()
    return deleted
