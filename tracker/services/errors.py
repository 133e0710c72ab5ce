"""Domain errors raised by services; the API maps them to 4xx JSON bodies."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the domain refuses; `code` is a stable slug, `field` names the bad input."""

    status = 400
    code = "invalid"

    def __init__(
        self, message: str, *, field: str | None = None, code: str | None = None, **extra: object
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code
        self.extra = extra


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class TooLarge(ServiceError):
    status = 413
    code = "too_large"


def is_backend_unavailable(exc: BaseException) -> bool:
    """The database or the blob store failing or unreachable: nothing the caller did wrong.

    API and web both answer it with a 503 and Retry-After instead of a 500.
    """
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError):
        return True
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # boto3 is optional on the embedded default
        return False
    return isinstance(exc, BotoCoreError | ClientError)
