"""People: create, deactivate, reset a password, and when each last worked.

A user is never deleted (their events name them for ever); a deactivated one cannot sign
in and their open sessions end at once. Roles live in :mod:`.roles`.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db.models import Max
from django.utils import timezone

from ..models import HUMAN_SOURCES, LabelEvent
from .roles import ADMIN, role_of


class UserError(ValueError):
    """An account change that cannot be done, with the reason."""


def set_active(user, active: bool, *, by) -> None:
    """Deactivate (or reactivate) ``user``. An admin cannot deactivate themself, nor the
    last active admin (nobody could manage users then)."""
    if not active:
        if user.pk == getattr(by, "pk", None):
            raise UserError("you cannot deactivate your own account")
        if role_of(user) == ADMIN and _active_admins().exclude(pk=user.pk).count() == 0:
            raise UserError("this is the last active admin")
    user.is_active = bool(active)
    user.save(update_fields=["is_active"])
    if not active:
        end_sessions(user)


def reset_password(user, password: str) -> None:
    """Set a new password (checked by the project's password validators) and sign the
    user out everywhere: whoever knew the old one is out."""
    try:
        password_validation.validate_password(password, user)
    except ValidationError as e:
        raise UserError(" ".join(e.messages)) from None
    user.set_password(password)
    user.save(update_fields=["password"])
    end_sessions(user)


def end_sessions(user) -> int:
    """End every open session of ``user`` (database sessions: the app's default)."""
    ended = 0
    for s in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(s.get_decoded().get("_auth_user_id")) == str(user.pk):
            s.delete()
            ended += 1
    return ended


def last_worked() -> dict[int, object]:
    """user id -> time of their latest retag: a person's judgement of a label (HUMAN_SOURCES:
    a retag or queue decision in the app, an MTurk answer). Import events name whoever ran the
    import (the demo's name the admin) and rule events (label merges, automatic cleaning) are
    no retag: counted, the admin "last retagged" at the import though they never retagged."""
    return dict(LabelEvent.objects.filter(by__isnull=False, source__in=HUMAN_SOURCES).values("by").annotate(at=Max("created_at"))
                .values_list("by", "at"))


def _active_admins():
    User = get_user_model()
    from django.db.models import Q

    return User.objects.filter(is_active=True).filter(Q(is_superuser=True) | Q(groups__name=ADMIN)).distinct()
