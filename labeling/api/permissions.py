"""The API's permissions are the pages' permissions: one role ladder (services.roles)."""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from ..services.roles import ADMIN, ANNOTATOR, has_role


def needed_role(request, view) -> str:
    """The role a request needs on ``view``.

    ``view.action_roles`` (action name -> role) wins, so a viewset can open one write
    action (retag) to annotators while the rest stays with admins. Otherwise reading
    needs ``view.read_role`` (annotator by default) and writing ``view.write_role``
    (admin by default).
    """
    action = getattr(view, "action", None)
    action_roles = getattr(view, "action_roles", None) or {}
    if action in action_roles:
        return action_roles[action]
    if request.method in SAFE_METHODS:
        return getattr(view, "read_role", ANNOTATOR)
    return getattr(view, "write_role", ADMIN)


class RolePermission(BasePermission):
    """Reading needs any role; writing needs ``view.write_role`` (admin by default).

    A viewset may set ``read_role`` / ``write_role`` / ``action_roles`` to open or
    close itself further.
    """

    def has_permission(self, request, view):
        return has_role(request.user, needed_role(request, view))
