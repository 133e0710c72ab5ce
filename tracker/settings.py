"""Settings, all from the environment.

With no environment at all Tracker runs embedded: SQLite in ./var, blobs in ./var/blobs and
Celery tasks executed in-process. DATABASE_URL, CELERY_BROKER_URL/REDIS_URL and S3_* switch to
PostgreSQL, a Redis-backed Celery worker pool and S3 respectively.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TRACKER_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _secret_key() -> str:
    """Use SECRET_KEY, else a key persisted under var/ so sessions survive restarts."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(50)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key


SECRET_KEY = _secret_key()
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
# Used to print absolute URLs (CLI summaries, API `url` fields) when no request is at hand.
TRACKER_PUBLIC_URL = os.environ.get("TRACKER_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "tracker",
    "api",
    "tracker.web",  # web UI: templates and static files
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "tracker.web.middleware.SecurityHeadersMiddleware",
    "tracker.web.middleware.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "tracker.urls"
WSGI_APPLICATION = "tracker.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'tracker.sqlite3'}"),
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
}
# A persistent connection broken by a database restart is noticed before the next request's
# first query (a cheap ping) instead of failing that request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + a busy timeout let the embedded server take concurrent writers without
    # "database is locked" errors.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # Covering indexes (INCLUDE) are a PostgreSQL speed-up; SQLite builds them without it.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:home"
LOGOUT_REDIRECT_URL = "web:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
WHITENOISE_USE_FINDERS = True

REDIS_URL = os.environ.get("REDIS_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Celery -----------------------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not CELERY_BROKER_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Periodic work (`celery worker -B` or a `celery beat` process). Redis keeps nothing on disk:
# the reconciler re-sends jobs whose message was lost; the clean-ups free abandoned uploads.
CELERY_BEAT_SCHEDULE = {
    "ingest-reconcile": {"task": "tracker.ingest.reconcile", "schedule": 60.0},
    "purge-idempotency": {"task": "tracker.purge_idempotency", "schedule": 3600.0},
    "cleanup-artifact-uploads": {"task": "tracker.media.cleanup_uploads", "schedule": 3600.0},
    "cleanup-stale-uploads": {"task": "tracker.cleanup_stale_uploads", "schedule": 3600.0},
    "artifact-verify-reconcile": {
        "task": "tracker.media.reconcile_verifications",
        "schedule": 300.0,
    },
}

# --- Blob storage -----------------------------------------------------------------------
TRACKER_STORAGE = {
    "BLOB_DIR": os.environ.get("TRACKER_BLOB_DIR", str(VAR_DIR / "blobs")),
    "S3_BUCKET": os.environ.get("S3_BUCKET", ""),
    "S3_ENDPOINT_URL": os.environ.get("S3_ENDPOINT_URL", ""),
    "S3_PUBLIC_ENDPOINT_URL": os.environ.get("S3_PUBLIC_ENDPOINT_URL", ""),
    "S3_REGION": os.environ.get("S3_REGION", "us-east-1"),
    "S3_ACCESS_KEY_ID": os.environ.get("S3_ACCESS_KEY_ID", os.environ.get("AWS_ACCESS_KEY_ID", "")),
    "S3_SECRET_ACCESS_KEY": os.environ.get(
        "S3_SECRET_ACCESS_KEY", os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    ),
    "S3_PREFIX": os.environ.get("S3_PREFIX", ""),
    # "off" for S3-compatible servers without flexible checksums (per-part CRC32 on uploads).
    "S3_PART_CHECKSUMS": os.environ.get("S3_PART_CHECKSUMS", "crc32"),
}

# Completing an S3 artifact upload up to this size re-reads and hashes it in the request (one
# round trip, "ready" at once); larger ones are verified by the worker so the client and the web
# tier do not wait on a full re-read (seconds per GB). Eager Celery (no worker) always inlines.
TRACKER_ARTIFACT_VERIFY_INLINE_MAX = int(
    os.environ.get("TRACKER_ARTIFACT_VERIFY_INLINE_MAX", 32 * 1024 * 1024)
)

# --- Limits -----------------------------------------------------------------------------
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 2000
TRACKER_MAX_JSON_BODY = int(os.environ.get("TRACKER_MAX_JSON_BODY", 32 * 1024 * 1024))

# --- Guessing throttles (tracker/services/throttle.py) -----------------------------------
# Overrides of (max failures, window seconds) per limit: "login_user", "login_ip", "share_ip".
TRACKER_THROTTLES: dict[str, tuple[int, int]] = {}
# Reverse proxies in front of the web tier whose X-Forwarded-For entries can be believed.
TRACKER_TRUSTED_PROXIES = int(os.environ.get("TRACKER_TRUSTED_PROXIES", "0"))

# --- DRF --------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "api.authentication.ShareLinkAuthentication",
        "api.authentication.CsrfSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "api.throttling.PrincipalRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "principal": os.environ.get("TRACKER_THROTTLE_RATE", "6000/min"),
        "anon": os.environ.get("TRACKER_ANON_THROTTLE_RATE", "600/min"),
        "login": os.environ.get("TRACKER_LOGIN_THROTTLE_RATE", "20/min"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "api.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tracker API",
    "DESCRIPTION": "Experiment tracking: workspaces, projects, runs, metrics, media, sharing.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation also declares the shared error responses (api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_error_responses",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redact": {"()": "tracker.logging_filters.RedactSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["redact"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}

from tracker.logging_filters import install_record_factory  # noqa: E402

install_record_factory()

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
