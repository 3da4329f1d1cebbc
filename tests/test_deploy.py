"""Deployment (issue 11, item 7): the secret key, HTTPS settings from the environment,
``manage.py check --deploy`` clean under the README's production variables, login and
basic auth throttled per user and per IP (django-axes), Django's full password rules."""
from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys

import pytest
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client, override_settings

from tests.conftest import PASSWORD, ROOT

# What the README's Production section tells an operator to set (services are not
# reached by `check`; their URLs only have to parse).
PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "retag.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://retag.example.com",
    "RETAG_HTTPS": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto,https",
    "RETAG_PROXY_COUNT": "1",
    "DATABASE_URL": "postgres://retag@db.example.com:5432/retag",
    "CELERY_BROKER_URL": "redis://redis.example.com:6379/0",
    "STORAGE_URI": "s3://retag-bucket/retag",
}


def _run(code_or_args, env: dict, tmp_path) -> subprocess.CompletedProcess:
    """A fresh Python with only ``env`` (and a private RETAG_VAR_DIR) set."""
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    full = {**base, "RETAG_VAR_DIR": str(tmp_path / "var"), "DJANGO_SETTINGS_MODULE": "labeling.settings", **env}
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


SHOW = ("import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({k: getattr(s, k, None) for k in ('SECRET_KEY', 'DEBUG', 'SESSION_COOKIE_SECURE', "
        "'CSRF_COOKIE_SECURE', 'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', "
        "'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER')}))")


def test_check_deploy_is_clean_under_the_production_variables(tmp_path):
    r = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "System check identified no issues" in r.stdout, r.stdout + r.stderr


def test_check_deploy_flags_the_embedded_default(tmp_path):
    """The same check on `make run`'s environment names what production must set."""
    r = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], {}, tmp_path)
    assert r.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in r.stderr + r.stdout


@pytest.mark.parametrize("key", ["retag-embedded-default-not-for-production"])
def test_debug_off_refuses_to_start_on_the_embedded_key(tmp_path, key):
    r = _run(SHOW, {"SECRET_KEY": key}, tmp_path)
    assert r.returncode != 0 and "SECRET_KEY is the embedded public default" in r.stderr
    # With DEBUG on (a developer's machine) it starts.
    assert _run(SHOW, {"SECRET_KEY": key, "DEBUG": "true"}, tmp_path).returncode == 0


def test_the_embedded_default_writes_a_random_key_once(tmp_path):
    first = _run(SHOW, {}, tmp_path)
    assert first.returncode == 0, first.stderr
    key = json.loads(first.stdout)["SECRET_KEY"]
    path = tmp_path / "var" / "secret_key"
    assert path.read_text().strip() == key and len(key) >= 50
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(_run(SHOW, {}, tmp_path).stdout)["SECRET_KEY"] == key  # read back, not rewritten
    other = tmp_path / "other"
    other.mkdir()
    assert json.loads(_run(SHOW, {}, other).stdout)["SECRET_KEY"] != key  # each installation its own


def test_https_settings_come_from_the_environment(tmp_path):
    off = json.loads(_run(SHOW, {}, tmp_path).stdout)
    assert not off["SESSION_COOKIE_SECURE"] and not off["SECURE_SSL_REDIRECT"] and off["SECURE_HSTS_SECONDS"] == 0
    assert off["SECURE_PROXY_SSL_HEADER"] is None
    on = json.loads(_run(SHOW, PRODUCTION_ENV, tmp_path).stdout)
    assert on["SESSION_COOKIE_SECURE"] and on["CSRF_COOKIE_SECURE"] and on["SECURE_SSL_REDIRECT"]
    assert on["SECURE_HSTS_SECONDS"] == 31536000 and on["SECURE_HSTS_INCLUDE_SUBDOMAINS"]
    assert on["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    # Each of Django's variables overrides its part.
    mixed = json.loads(_run(SHOW, {**PRODUCTION_ENV, "SECURE_HSTS_SECONDS": "60", "SECURE_HSTS_PRELOAD": "false"},
                            tmp_path).stdout)
    assert mixed["SECURE_HSTS_SECONDS"] == 60 and not mixed["SECURE_HSTS_PRELOAD"] and mixed["SESSION_COOKIE_SECURE"]
    bad = _run(SHOW, {"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, tmp_path)
    assert bad.returncode != 0 and "SECURE_PROXY_SSL_HEADER" in bad.stderr


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["12345678901", "password123", "short1!", "alice-annotator"])
def test_password_validators_are_djangos_full_set(password, make_user):
    user = make_user("annotator", username="alice-annotator")
    with pytest.raises(ValidationError):
        validate_password(password, user)
    validate_password("correct horse battery staple", user)


# --- throttling -----------------------------------------------------------------------

def _login(client, username, password, ip="10.0.0.1"):
    return client.post("/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


@pytest.mark.django_db
@override_settings(AXES_FAILURE_LIMIT=3)
def test_login_is_throttled_per_user(annotator):
    client = Client()
    for _ in range(2):
        assert _login(client, annotator.username, "wrong", ip="10.0.0.1").status_code == 200  # the form again
    assert _login(client, annotator.username, "wrong", ip="10.0.0.1").status_code == 429  # the 3rd locks
    # Locked out: even the right password, even from another address.
    r = _login(client, annotator.username, PASSWORD, ip="10.0.0.2")
    assert r.status_code == 429 and b"Too many failed sign-ins" in r.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
@override_settings(AXES_FAILURE_LIMIT=3)
def test_login_is_throttled_per_ip(make_user):
    users = [make_user("annotator") for _ in range(4)]
    client = Client()
    for u in users[:2]:
        assert _login(client, u.username, "wrong", ip="10.0.0.9").status_code == 200
    assert _login(client, users[2].username, "wrong", ip="10.0.0.9").status_code == 429
    r = _login(client, users[3].username, PASSWORD, ip="10.0.0.9")
    assert r.status_code == 429 and "_auth_user_id" not in client.session
    # The same user from another address is let in: the lock was the address's.
    assert _login(Client(), users[3].username, PASSWORD, ip="10.0.0.10").status_code == 302


@pytest.mark.django_db
@override_settings(AXES_FAILURE_LIMIT=3)
def test_a_successful_login_resets_the_users_count(annotator):
    client = Client()
    for _ in range(2):
        _login(client, annotator.username, "wrong")
    assert _login(client, annotator.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(2):
        _login(client, annotator.username, "wrong", ip="10.0.0.3")
    assert _login(client, annotator.username, PASSWORD, ip="10.0.0.3").status_code == 302


def _basic(username, password):
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.mark.django_db
@override_settings(AXES_FAILURE_LIMIT=3)
def test_basic_auth_is_throttled_per_user(annotator):
    client = Client()
    assert client.get("/api/projects/", HTTP_AUTHORIZATION=_basic(annotator.username, PASSWORD)).status_code == 200
    for _ in range(2):
        r = client.get("/api/projects/", HTTP_AUTHORIZATION=_basic(annotator.username, "wrong"),
                       REMOTE_ADDR="10.0.1.1")
        assert r.status_code in (401, 403)
    r = client.get("/api/projects/", HTTP_AUTHORIZATION=_basic(annotator.username, "wrong"), REMOTE_ADDR="10.0.1.1")
    assert r.status_code == 429
    r = client.get("/api/projects/", HTTP_AUTHORIZATION=_basic(annotator.username, PASSWORD), REMOTE_ADDR="10.0.1.2")
    assert r.status_code == 429 and "too many failed logins" in r.json()["detail"]


@pytest.mark.django_db
@override_settings(AXES_FAILURE_LIMIT=3, PROXY_COUNT=1)
def test_behind_a_proxy_the_client_address_is_the_proxys_view(make_user):
    """With one proxy in front, the address is the last X-Forwarded-For hop: a client
    cannot dodge the per-IP lock by writing its own header."""
    users = [make_user("annotator") for _ in range(4)]
    for i, u in enumerate(users[:3]):
        Client().post("/accounts/login/", {"username": u.username, "password": "wrong"}, REMOTE_ADDR="10.9.9.9",
                      HTTP_X_FORWARDED_FOR=f"1.2.3.{i}, 203.0.113.7")
    r = Client().post("/accounts/login/", {"username": users[3].username, "password": PASSWORD},
                      REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="5.6.7.8, 203.0.113.7")
    assert r.status_code == 429
