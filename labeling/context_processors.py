from .services.roles import ADMIN, SCIENTIST, has_role, role_of


def roles(request):
    user = getattr(request, "user", None)
    return {
        "role": role_of(user),
        "is_scientist": has_role(user, SCIENTIST),
        "is_admin": has_role(user, ADMIN),
    }
