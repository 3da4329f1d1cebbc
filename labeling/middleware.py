"""Anonymous users see nothing but the login page (and static files)."""
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.shortcuts import render

OPEN_PREFIXES = ("/accounts/login/", "/" + settings.STATIC_URL.lstrip("/"))


class LoginRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.user.is_authenticated or request.path.startswith(OPEN_PREFIXES):
            return self.get_response(request)
        if request.path.startswith("/api/"):
            # The API answers for itself (basic auth is tried there); 401/403 come from DRF.
            return self.get_response(request)
        return redirect_to_login(request.get_full_path())


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
