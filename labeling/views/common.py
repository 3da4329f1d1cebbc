"""What every page view shares: the role gate and the context of the top bar."""
from __future__ import annotations

from functools import wraps

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_safe
from django.views.static import serve

from ..api.serializers import MAX_ID
from ..models import Project
from ..services.roles import ADMIN, ANNOTATOR, ROLES, has_role


class RoleRequired(PermissionDenied):
    """The page needs ``needed`` (or a role above it); the 403 page says which."""

    def __init__(self, needed: str):
        self.needed = needed
        super().__init__(f"this page needs the {needed} role")


def role_required(role: str = ANNOTATOR):
    """Let the view run for ``role`` and above; anyone else gets the 403 page.

    Anonymous users never get here: the login middleware sends them to the login page.
    """

    def decorate(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, role):
                raise RoleRequired(role)
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


browse_required = role_required(ANNOTATOR)
admin_required = role_required(ADMIN)


def forbidden(request, exception=None):
    """The 403 page (``handler403``): which role the page needs and which the person has
    (the top bar's context gives ``role``). Django logs the 403 itself, in one line
    (settings.LOGGING)."""
    needed = getattr(exception, "needed", None)
    return page(request, "403.html", {"needed": needed, "above": ROLES[ROLES.index(needed) + 1:] if needed else ()},
                status=403)


@require_safe
def static_file(request, path):
    """A collected static file (settings.SERVE_STATIC): django.views.static.serve from
    STATIC_ROOT, whose ``safe_join`` refuses a path out of the folder (a 400, as any
    SuspiciousOperation in the normal handling)."""
    return serve(request, path, document_root=settings.STATIC_ROOT)


def page(request, template: str, context: dict | None = None, *, project: Project | None = None, status=200):
    """Render a page with what the top bar needs: the project switcher and the current project."""
    context = dict(context or {})
    context.setdefault("nav_projects", Project.objects.only("id", "name", "slug"))
    context.setdefault("current_project", project)
    return render(request, template, context, status=status)


def int_or_none(value, *, lo: int = 0, hi: int = MAX_ID) -> int | None:
    """A whole number in ``[lo, hi]`` from a form or query value, else None: ``"1e400"``,
    ``"-1"``, ``"9" * 30`` or a NUL byte are ignored like an absent value, never sent to
    the database (where an out-of-range number is an error, not an empty result)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.isascii() or not value.lstrip("-").isdigit() or len(value) > 20:
            return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if lo <= number <= hi else None


def local_next(request) -> str | None:
    """The ``next`` a form posted (or a link carried), when it is a path of this site;
    None for anything else, so a redirect never leaves the site (no open redirect)."""
    target = request.POST.get("next") or request.GET.get("next")
    # An absolute path only: redirect() would take a bare word for a URL name to reverse.
    if target and target.startswith("/") and url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return None
