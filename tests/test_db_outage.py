"""A database that cannot be reached is a 503 (retry); an error in SQL is a 500, logged as a
bug: on SQLite a syntax error is an OperationalError too, and must not look like an outage.
(tests/test_db_restart.py stops and restarts a real PostgreSQL.)"""
from __future__ import annotations

import sqlite3
from unittest import mock

import psycopg
import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from labeling.middleware import is_outage

pytestmark = pytest.mark.django_db


def django_error(cause: Exception, kind=OperationalError) -> Exception:
    """The error Django raises for a driver's error (DatabaseErrorWrapper: ``raise ... from``)."""
    error = kind(*cause.args)
    error.__cause__ = cause
    return error


@pytest.fixture
def api(make_user):
    client = Client(raise_request_exception=False)
    client.force_login(make_user("annotator"))
    return client


@pytest.mark.parametrize("cause, outage", [
    (sqlite3.OperationalError('near "SELEC": syntax error'), False),
    (sqlite3.OperationalError("no such column: labeling_project.nope"), False),
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("unable to open database file"), True),
    (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
    (psycopg.errors.AdminShutdown("terminating connection due to administrator command"), True),
    (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
    (psycopg.errors.ConnectionFailure("connection failure"), True),
    (psycopg.OperationalError("connection failed: Connection refused"), True),  # no SQLSTATE: never answered
])
def test_only_an_unreachable_database_is_an_outage(cause, outage):
    assert is_outage(django_error(cause)) is outage


def test_a_closed_connection_is_an_outage():
    assert is_outage(django_error(psycopg.InterfaceError("the connection is closed"), InterfaceError))


@pytest.mark.parametrize("cause, status", [
    (sqlite3.OperationalError('near "SELEC": syntax error'), 500),
    (sqlite3.OperationalError("database is locked"), 503),
    (psycopg.OperationalError("connection failed: Connection refused"), 503),
])
def test_a_sql_bug_is_a_500_an_outage_a_503(api, cause, status, caplog):
    with mock.patch("labeling.api.views.ProjectViewSet.get_queryset", side_effect=django_error(cause)):
        r = api.get("/api/projects/")
    assert r.status_code == status and r["Content-Type"] == "application/json"
    if status == 503:
        assert r.json()["error"] == "database_unavailable" and r["Retry-After"]
    else:
        assert "internal error" in r.json()["detail"]
        assert any(rec.levelname == "ERROR" and rec.name == "django.request" for rec in caplog.records)
