import pytest

from labeling.services.roles import ADMIN, ANNOTATOR, SCIENTIST, has_role, role_of, set_role

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role,can", [
    (ANNOTATOR, {ANNOTATOR}),
    (SCIENTIST, {ANNOTATOR, SCIENTIST}),
    (ADMIN, {ANNOTATOR, SCIENTIST, ADMIN}),
    (None, set()),
])
def test_role_ladder(make_user, role, can):
    user = make_user(role)
    assert role_of(user) == role
    assert {r for r in (ANNOTATOR, SCIENTIST, ADMIN) if has_role(user, r)} == can


def test_set_role_replaces_the_old_one(make_user):
    user = make_user(ADMIN)
    assert user.is_staff
    set_role(user, ANNOTATOR)
    user = type(user).objects.get(pk=user.pk)
    assert role_of(user) == ANNOTATOR and not user.is_staff
    with pytest.raises(ValueError):
        set_role(user, "owner")


def test_superuser_is_admin(django_user_model):
    su = django_user_model.objects.create_superuser("root", password="x" * 12)
    assert role_of(su) == ADMIN
