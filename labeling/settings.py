"""One settings module. Everything that differs between machines comes from the
environment; when a variable is unset the embedded default applies (SQLite, a local
storage folder, a file-system Celery broker), so `make run` needs no services.
"""
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("RETAG_VAR_DIR", BASE_DIR / "var"))


def env_bool(name, default=False):
    return os.environ.get(name, str(default)).lower() in ("1", "true", "yes", "on")


# --- Security and authentication ---------------------------------------------------
DEBUG = env_bool("DEBUG", False)

# Keys that are public (they are in this repository's history or docs): signing
# sessions, CSRF tokens and password resets with one of them lets anyone forge them.
EMBEDDED_SECRET_KEYS = frozenset({"retag-embedded-default-not-for-production"})


def _secret_key() -> str:
    """``SECRET_KEY`` from the environment, else this installation's own random key.

    The embedded default (``make run``) has no environment to set, and a key written in
    the code is public. So when ``SECRET_KEY`` is unset a random key is written once to
    ``var/secret_key`` (mode 0600) and read from there afterwards: sessions survive a
    restart and no two installations share a key. Production sets ``SECRET_KEY`` (the
    same on every web machine). With ``DEBUG`` off, a known public key refuses to start.
    """
    from django.core.exceptions import ImproperlyConfigured

    key = os.environ.get("SECRET_KEY", "")
    if key:
        if key in EMBEDDED_SECRET_KEYS and not DEBUG:
            raise ImproperlyConfigured(
                "SECRET_KEY is the embedded public default: with DEBUG off set a secret one "
                "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), or unset it for a "
                "random key kept in RETAG_VAR_DIR/secret_key")
        return key
    path = VAR_DIR / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        import secrets

        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two processes starting at once keep one key, the first one's
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
        return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# HTTPS. Off by default: the embedded default serves plain HTTP on a loopback address.
# RETAG_HTTPS=true (the site is served over HTTPS, usually by a proxy in front) turns on
# secure cookies, the redirect to HTTPS and HSTS; each of Django's own variables below
# overrides its part.
HTTPS = env_bool("RETAG_HTTPS", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", HTTPS)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
# The header a TLS-terminating proxy sets, as "HEADER,value" (e.g. "X-Forwarded-Proto,https");
# only set it when the proxy always sets or strips that header, or clients can claim HTTPS.
_proxy_ssl = [p.strip() for p in os.environ.get("SECURE_PROXY_SSL_HEADER", "").split(",") if p.strip()]
if _proxy_ssl:
    if len(_proxy_ssl) != 2:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECURE_PROXY_SSL_HEADER is 'Header-Name,value', e.g. 'X-Forwarded-Proto,https'")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl[0].upper().replace("-", "_").removeprefix("HTTP_"), _proxy_ssl[1])
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins a username, and
# separately an IP address, is locked out for RETAG_LOGIN_COOLOFF_S seconds, on the login
# page, the Django admin and the API's HTTP basic auth alike (every path goes through
# django.contrib.auth.authenticate, where the axes backend sits first). A success resets
# the username's count.
from datetime import timedelta  # noqa: E402

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = int(os.environ.get("RETAG_LOGIN_FAILURE_LIMIT", "10"))
AXES_COOLOFF_TIME = timedelta(seconds=float(os.environ.get("RETAG_LOGIN_COOLOFF_S", "900")))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "labeling.middleware.lockout_response"  # the page, or JSON for the API
AXES_HTTP_RESPONSE_CODE = 429
# Behind N reverse proxies the client is the Nth address from the right of X-Forwarded-For
# (RETAG_PROXY_COUNT=N); without proxies it is REMOTE_ADDR, never a header a client sets.
PROXY_COUNT = int(os.environ.get("RETAG_PROXY_COUNT", "0"))
AXES_CLIENT_IP_CALLABLE = "labeling.middleware.client_ip"
AXES_USERNAME_CALLABLE = "labeling.middleware.login_username"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI files, served locally (no CDN)
    "labeling",
]

MIDDLEWARE = [
    "labeling.middleware.DatabaseOutageMiddleware",  # first: sees what fails in the others
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "labeling.middleware.LoginRequiredMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a lockout into the 429 page
]

ROOT_URLCONF = "labeling.urls"
WSGI_APPLICATION = "labeling.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "labeling.context_processors.roles",
            ],
        },
    },
]

# Persistent connections (DB_CONN_MAX_AGE seconds) are checked before each request
# reuses them: a connection that PostgreSQL dropped (a restart, a failover, an idle
# timeout) is replaced, instead of failing the request with its traceback. A server that
# cannot be reached fails a connection after DB_CONNECT_TIMEOUT seconds, never hangs a
# web thread; labeling.middleware answers such a request with a 503.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'retag.sqlite3'}",
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", int(os.environ.get("DB_CONNECT_TIMEOUT", "5")))
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Web server and worker share the file: wait for the lock instead of failing.
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# Django's full set: not like the username, at least 8 characters, not a common
# password, not all digits.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "static"
# The app serves what collectstatic gathered in STATIC_ROOT itself (labeling/urls.py), with
# DEBUG off: the embedded default (`make run`) has no proxy in front. Behind a proxy that
# serves /static/, RETAG_SERVE_STATIC=0 leaves the route out.
SERVE_STATIC = env_bool("RETAG_SERVE_STATIC", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Storage -----------------------------------------------------------------
# Where Retag writes what it makes: thumbnails, training manifests, models.
# A folder (file://...) by default, an S3 prefix (s3://bucket/prefix) in production.
STORAGE_URI = os.environ.get("STORAGE_URI", (VAR_DIR / "storage").as_uri())
# S3-compatible stores: boto3 reads S3_ENDPOINT_URL through mlcore.storage.
S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL", "")
# Storage roots imports may read from, besides those admins add in the app
# (comma-separated URIs). Anything outside every root is refused.
IMPORT_ROOTS = [r for r in os.environ.get("RETAG_IMPORT_ROOTS", "").split(",") if r]
# Images above this many pixels are flagged as decompression bombs.
IMAGE_MAX_PIXELS = int(os.environ.get("IMAGE_MAX_PIXELS", "64000000"))
THUMBNAIL_SIZE = 256
# A running import whose worker has not written progress for this long is taken over.
IMPORT_STALE_AFTER_S = float(os.environ.get("IMPORT_STALE_AFTER_S", "120"))
# ... at most this many times in all; then it fails with the reason.
IMPORT_MAX_ATTEMPTS = int(os.environ.get("IMPORT_MAX_ATTEMPTS", "3"))
# Zip archives: what one member and the whole archive may expand to, and how much a member
# may compress (photos hardly do; a 1000:1 member is a bomb, not an image).
IMPORT_ZIP_MAX_MEMBER_BYTES = int(os.environ.get("IMPORT_ZIP_MAX_MEMBER_BYTES", str(128 << 20)))
IMPORT_ZIP_MAX_EXPANDED_BYTES = int(os.environ.get("IMPORT_ZIP_MAX_EXPANDED_BYTES", str(16 << 30)))
IMPORT_ZIP_MAX_RATIO = float(os.environ.get("IMPORT_ZIP_MAX_RATIO", "100"))
# Share of images that go to the test split when the source gives no split.
DEFAULT_TEST_RATIO = float(os.environ.get("DEFAULT_TEST_RATIO", "0.2"))

# --- Celery ------------------------------------------------------------------
_broker_dir = VAR_DIR / "broker"
# "filesystem://localhost//", not "filesystem://": kombu warns "No hostname was supplied"
# at every connection (load_demo's first run, each task sent) when the URL has none.
DEFAULT_BROKER_URL = "filesystem://localhost//"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
if CELERY_BROKER_URL.startswith("filesystem"):
    for sub in ("queue", "processed", "control"):
        (_broker_dir / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # kombu keeps its exchange tables here; by default it writes them to the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
# Time limits. Every task has a soft one (the task hears SoftTimeLimitExceeded and records why)
# and a hard one TASK_TIME_LIMIT_GRACE_S later (the pool process is killed). Imports, MTurk
# syncs, scoring: TASK_TIME_LIMIT_S. Training runs and the fold runs of suspects runs:
# RUN_TIME_LIMIT_S, generous (a week): a ResNet-50 on a million images for 90 epochs on one
# GPU takes days; a run that hits it fails with the reason and keeps its checkpoint.
TASK_TIME_LIMIT_S = float(os.environ.get("TASK_TIME_LIMIT_S", str(6 * 3600)))
RUN_TIME_LIMIT_S = float(os.environ.get("RUN_TIME_LIMIT_S", str(7 * 24 * 3600)))
TASK_TIME_LIMIT_GRACE_S = 120.0
CELERY_TASK_SOFT_TIME_LIMIT = TASK_TIME_LIMIT_S
CELERY_TASK_TIME_LIMIT = TASK_TIME_LIMIT_S + TASK_TIME_LIMIT_GRACE_S
if CELERY_BROKER_URL.startswith(("redis", "rediss", "sqs")):
    # A message not acknowledged within the visibility timeout is delivered again, to a second
    # worker while the first still runs it (tasks are acknowledged late). Above the longest
    # task, so that this never happens to a live run; a worker that was killed is recovered
    # well before by the stale-run check (RUN_STALE_AFTER_S), and a redelivery that comes
    # anyway finds the run's lease held or the run finished and does nothing.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": int(max(RUN_TIME_LIMIT_S, TASK_TIME_LIMIT_S) + TASK_TIME_LIMIT_GRACE_S + 3600)}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"labeling.tasks.train_*": {"queue": "gpu"}}
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- API -----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "labeling.api.authentication.BasicAuthentication",  # DRF's, throttled by django-axes
    ],
    "DEFAULT_PERMISSION_CLASSES": ["labeling.api.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "labeling.api.exceptions.handle",  # services' exceptions -> 400/404/409/502
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Retag API",
    "DESCRIPTION": ("Retag: image label quality. Projects, tasks and labels; images and their current labels; "
                    "retags (with the annotation version you saw: 409 when it changed) and every label event; "
                    "imports and storage roots; training runs, their progress and quality figures; suspects "
                    "(probably mislabelled images), their queue, clusters and cleaning runs; Mechanical Turk "
                    "batches and workers. Errors are {\"detail\": ...} or field errors."),
    "VERSION": "1.0.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Four models have a "state": one enum name each in the schema.
    "ENUM_NAME_OVERRIDES": {
        "TrainingRunStateEnum": "labeling.models.TrainingRun.State",
        "ImportJobStateEnum": "labeling.models.ImportJob.State",
        "MTurkBatchStateEnum": "labeling.models.MTurkBatch.State",
        "SuspectRunStateEnum": "labeling.models.SuspectRun.State",
    },
}

def _one_line_for_4xx(record) -> bool:
    """A refused request (403 above all: a person on a page of a role above theirs) is
    logged by django.request with the PermissionDenied's traceback; it is no error of the
    app, so it keeps its one line ("Forbidden (Permission denied): /runs/3/") and drops
    the traceback. 5xx keep theirs."""
    if 400 <= getattr(record, "status_code", 0) < 500:
        record.exc_info = None
        record.exc_text = None
    return True


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"one_line_for_4xx": {"()": "django.utils.log.CallbackFilter", "callback": _one_line_for_4xx}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
    "loggers": {"labeling": {"level": os.environ.get("LOG_LEVEL", "INFO")},
                "django.request": {"filters": ["one_line_for_4xx"]}},
}

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so that a worker process in the tests sees the same test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

# --- Mechanical Turk -------------------------------------------------------------
# The sandbox unless production is asked for explicitly.
MTURK_PRODUCTION = env_bool("MTURK_PRODUCTION", False)
# Images that are not on S3 are uploaded here (as thumbnails) and shown through presigned URLs.
MTURK_IMAGE_BUCKET = os.environ.get("MTURK_IMAGE_BUCKET", "")
# Else Retag serves them itself through signed, expiring links under its public address
# (e.g. https://retag.example.com, behind the reverse proxy); a CSV exported from the page
# falls back to the address the admin uses (the page warns when workers cannot reach it).
RETAG_PUBLIC_URL = os.environ.get("RETAG_PUBLIC_URL", "")

# --- Periodic work (the worker of `make run` runs beat too) -----------------------
CELERY_BEAT_SCHEDULE = {
    "mturk-sync": {"task": "labeling.mturk_sync_open_batches", "schedule": 600.0},
    "check-stale-runs": {"task": "labeling.tasks.check_stale_runs", "schedule": 60.0},
    "check-stale-imports": {"task": "labeling.tasks.check_stale_imports", "schedule": 60.0},
    "advance-suspect-runs": {"task": "labeling.tasks.advance_suspect_runs", "schedule": 60.0},
}

# --- Training runs ----------------------------------------------------------------
# A running run beats every RUN_HEARTBEAT_S; one silent for RUN_STALE_AFTER_S lost its
# worker and is re-queued to resume from its checkpoint, at most RUN_MAX_ATTEMPTS times.
RUN_HEARTBEAT_S = float(os.environ.get("RUN_HEARTBEAT_S", "10"))
RUN_STALE_AFTER_S = float(os.environ.get("RUN_STALE_AFTER_S", "120"))
RUN_MAX_ATTEMPTS = int(os.environ.get("RUN_MAX_ATTEMPTS", "3"))
# A run that beats but makes no progress for this long is stuck, and is marked failed.
RUN_HANG_AFTER_S = float(os.environ.get("RUN_HANG_AFTER_S", "3600"))

# --- Suspects ---------------------------------------------------------------------
# How long an annotator holds a suspect the queue showed them before another may get it.
SUSPECT_LEASE_S = float(os.environ.get("SUSPECT_LEASE_S", "300"))
# Near duplicates: perceptual hashes always; with a pretrained backbone's state_dict (torchvision
# keys, e.g. ImageNet MobileNetV2) also its features, for near copies such as crops.
DUPLICATES_WEIGHTS = os.environ.get("DUPLICATES_WEIGHTS", "")
DUPLICATES_ARCH = os.environ.get("DUPLICATES_ARCH", "mobilenet_v2")
DUPLICATES_IMAGE_SIZE = int(os.environ.get("DUPLICATES_IMAGE_SIZE", "128"))
