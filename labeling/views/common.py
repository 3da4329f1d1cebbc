"""What every page view shares: the role gate and the context of the top bar."""
from __future__ import annotations

from functools import wraps

from django.core.exceptions import PermissionDenied
from django.shortcuts import render

from ..models import Project
from ..services.roles import ADMIN, ANNOTATOR, has_role


def role_required(role: str = ANNOTATOR):
    """Let the view run for ``role`` and above; anyone else gets the 403 page.

    Anonymous users never get here: the login middleware sends them to the login page.
    """

    def decorate(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not has_role(request.user, role):
                raise PermissionDenied(f"this page needs the {role} role")
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


browse_required = role_required(ANNOTATOR)
admin_required = role_required(ADMIN)


def page(request, template: str, context: dict | None = None, *, project: Project | None = None, status=200):
    """Render a page with what the top bar needs: the project switcher and the current project."""
    context = dict(context or {})
    context.setdefault("nav_projects", Project.objects.only("id", "name", "slug"))
    context.setdefault("current_project", project)
    return render(request, template, context, status=status)
