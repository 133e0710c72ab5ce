"""Keep secrets out of logs: API tokens and share-link tokens are redacted wherever they appear
(request paths in django.request warnings, gunicorn access lines, exception messages)."""

from __future__ import annotations

import logging
import re

SECRET_RE = re.compile(r"\b(trk_[0-9a-f]{8}_|shr_)[A-Za-z0-9_\-]{8,}")


def redact(text: str) -> str:
    return SECRET_RE.sub(lambda m: m.group(1) + "[redacted]", text)


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def install_record_factory() -> None:
    """Redact at record creation, so every handler (ours, gunicorn's, pytest's) sees clean text."""
    base = logging.getLogRecordFactory()
    if getattr(base, "_tracker_redacting", False):
        return

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's business
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return record

    factory._tracker_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
