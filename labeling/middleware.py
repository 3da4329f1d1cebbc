"""Anonymous users see nothing but the login page (and static files)."""
from django.conf import settings
from django.contrib.auth.views import redirect_to_login

# /mturk/image/: MTurk workers load a batch's images through signed, expiring links (views.mturk.signed_image).
OPEN_PREFIXES = ("/accounts/login/", "/" + settings.STATIC_URL.lstrip("/"), "/mturk/image/")


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
