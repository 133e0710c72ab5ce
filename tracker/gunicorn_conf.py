"""gunicorn settings: access lines go through the same secret redaction as app logs."""

from gunicorn.glogging import Logger

from tracker.logging_filters import redact


class RedactingLogger(Logger):
    def access(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        environ = dict(environ)
        for key in ("PATH_INFO", "QUERY_STRING", "RAW_URI", "HTTP_REFERER"):
            if key in environ and isinstance(environ[key], str):
                environ[key] = redact(environ[key])
        req.path = redact(req.path)
        req.query = redact(req.query or "")
        req.uri = redact(req.uri)
        super().access(resp, req, environ, request_time)


logger_class = RedactingLogger


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Build the blob store's S3 clients while the worker boots: importing boto3 and loading its
    S3 model takes ~0.2 s, which would otherwise land on the worker's first upload/download."""
    from tracker.storage import get_blob_store

    get_blob_store()
