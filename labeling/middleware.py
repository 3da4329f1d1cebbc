"""Anonymous users see nothing but the login page (and static files); a database outage
answers 503, not 500 (and a bug in SQL stays a 500)."""
import logging
import sqlite3
import sys

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render

logger = logging.getLogger(__name__)
# /mturk/image/: MTurk workers load a batch's images through signed, expiring links (views.mturk.signed_image).
OPEN_PREFIXES = ("/accounts/login/", "/" + settings.STATIC_URL.lstrip("/"), "/mturk/image/")


class LoginRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated or request.path.startswith(OPEN_PREFIXES):
            return self.get_response(request)
        if request.path.startswith("/api/") and not _browser_without_credentials(request):
            # The API answers for itself (basic auth is tried there); 401/403 come from DRF.
            return self.get_response(request)
        return redirect_to_login(request.get_full_path())


def _browser_without_credentials(request) -> bool:
    """A person's browser opening an API page (the docs, the browsable API) signed out: it
    asks for HTML and sends no credentials, so it is sent to the login page like any page
    (not told that "your account has no role"). A client with credentials, or one that
    does not ask for HTML, gets the API's own 401/403."""
    return "text/html" in request.headers.get("Accept", "") and "Authorization" not in request.headers


class DatabaseOutageMiddleware:
    """A request that fails because the database cannot be reached answers 503 with a
    short page (JSON under /api/) and ``Retry-After``, not a 500 traceback: the app is
    fine, its database is restarting or gone, and the client should retry, not report a
    bug. The first in MIDDLEWARE, so that it also sees what fails in the other
    middleware (the session and the user are read from the database there).

    Django turns an exception into a 500 response in the layer where it is raised, so
    this middleware cannot catch it; the ``got_request_exception`` signal, sent while the
    exception is being handled, marks the request instead, and the 500 is replaced here.
    """

    retry_after_s = 5

    def __init__(self, get_response):
        self.get_response = get_response
        got_request_exception.connect(_mark_database_outage, dispatch_uid="retag-database-outage")

    def __call__(self, request):
        response = self.get_response(request)
        error = getattr(request, "_database_outage", None)
        if error is None:
            return response
        logger.warning("database unavailable, answered 503 for %s %s: %s", request.method, request.path,
                       str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return database_unavailable(request)


DATABASE_ERRORS = (OperationalError, InterfaceError)
# PostgreSQL's SQLSTATEs of a server that cannot be reached or is going away: class 08
# (connection exception) and the shutdowns and start-ups of a restart. A syntax error (42601),
# a constraint (23...) or a statement timeout (57014) is the app's error, not an outage.
OUTAGE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}  # admin / crash shutdown, cannot connect now, too many clients
# SQLite has no codes in its Python errors: a syntax error is an OperationalError too.
SQLITE_OUTAGES = ("database is locked", "unable to open database", "disk i/o error", "database or disk is full")


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot be reached (a 503: retry), rather than that
    the app sent it something wrong (a bug: a 500, logged). Django's error wraps the
    driver's (``__cause__``): psycopg's carries the server's SQLSTATE, or none when the
    server never answered (refused, dropped: a connection failure); SQLite's only its message."""
    if isinstance(error, InterfaceError):
        return True  # the connection is already closed or unusable
    if not isinstance(error, OperationalError):
        return False
    cause = error.__cause__ or error
    if isinstance(cause, sqlite3.Error):
        return any(m in str(cause).lower() for m in SQLITE_OUTAGES)
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if sqlstate:
        return sqlstate.startswith("08") or sqlstate in OUTAGE_SQLSTATES
    return True


def _mark_database_outage(sender, request=None, **kwargs):
    error = sys.exc_info()[1]
    if request is not None and isinstance(error, DATABASE_ERRORS) and is_outage(error):
        request._database_outage = error


def database_unavailable(request) -> HttpResponse:
    """The 503 itself: rendered without the database (no template context processors, no
    session), so that it can be sent while the database is down."""
    message = "The database is unavailable for a moment. Nothing was saved by this request; try again shortly."
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message, "error": "database_unavailable"}, status=503)
    else:
        response = HttpResponse(
            "<!doctype html><html><head><title>Retag: try again shortly</title></head>"
            f"<body><h1>Try again shortly</h1><p>{message}</p></body></html>",
            status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(DatabaseOutageMiddleware.retry_after_s)
    return response


def client_ip(request) -> str | None:
    """The client's address for login throttling: REMOTE_ADDR, or behind
    ``settings.PROXY_COUNT`` trusted proxies the address the outermost of them saw (the
    Nth from the right of X-Forwarded-For; what a client writes further left is ignored)."""
    request = getattr(request, "_request", request)  # DRF's Request wraps Django's
    if settings.PROXY_COUNT:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= settings.PROXY_COUNT:
            return hops[-settings.PROXY_COUNT]
    return request.META.get("REMOTE_ADDR")


def lockout_response(request, original_response=None, credentials=None):
    """What a locked-out login gets (django-axes): 429, as JSON on the API, else the page."""
    wait = int(settings.AXES_COOLOFF_TIME.total_seconds())
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": f"too many failed logins for this user or address; try again in {wait} s"},
                            status=429)
    return render(request, "registration/locked.html", {"cooloff_s": wait}, status=429)


def login_username(request, credentials=None) -> str | None:
    """The username a login attempt names, as django-axes records it: what a client sent
    (any length, any characters) cut to what a username can be, so that recording a
    failed attempt never fails itself (a 300-character name overflowed its column: a 500)."""
    if credentials:
        name = credentials.get("username")
    else:
        name = getattr(request, "POST", {}).get("username")
    if name is None:
        return None
    return str(name).replace("\x00", "")[:150]
