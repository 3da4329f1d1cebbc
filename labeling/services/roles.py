"""Three roles, as Django groups. Each role can do what the one before it can, and more.

- annotator: browse images and retag them
- scientist: also launch training runs and read metrics
- admin:     also manage projects, users, storage roots, imports and exports
"""
from django.contrib.auth.models import Group

ANNOTATOR, SCIENTIST, ADMIN = "annotator", "scientist", "admin"
ROLES = (ANNOTATOR, SCIENTIST, ADMIN)
_RANK = {None: 0, ANNOTATOR: 1, SCIENTIST: 2, ADMIN: 3}


def ensure_groups() -> None:
    for name in ROLES:
        Group.objects.get_or_create(name=name)


def role_of(user) -> str | None:
    """The highest role the user holds; superusers are admins; None for anyone else."""
    if not user or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    cached = getattr(user, "_retag_role", False)
    if cached is not False:
        return cached
    names = {g.name for g in user.groups.all()}  # uses a prefetch_related("groups") when there is one
    role = next((r for r in reversed(ROLES) if r in names), None)
    user._retag_role = role
    return role


def has_role(user, needed: str) -> bool:
    """True when the user's role is ``needed`` or above it."""
    return _RANK[role_of(user)] >= _RANK[needed]


def set_role(user, role: str) -> None:
    """Give the user exactly one role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    ensure_groups()
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == ADMIN
    user.save(update_fields=["is_staff"])
    user.__dict__.pop("_retag_role", None)
