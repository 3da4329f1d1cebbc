"""The API's permissions are the pages' permissions: one role ladder (services.roles)."""
from rest_framework.permissions import SAFE_METHODS, BasePermission

from ..services.roles import ADMIN, ANNOTATOR, has_role


class RolePermission(BasePermission):
    """Reading needs any role; writing needs ``view.write_role`` (admin by default).

    A viewset may set ``read_role`` / ``write_role`` to open or close itself further.
    """

    def has_permission(self, request, view):
        if request.method in SAFE_METHODS:
            return has_role(request.user, getattr(view, "read_role", ANNOTATOR))
        return has_role(request.user, getattr(view, "write_role", ADMIN))
