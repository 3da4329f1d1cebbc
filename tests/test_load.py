"""The load bench's short twin (bench/load.py): a few annotators working the suspects queue
and retagging from the API, two scientists reading dashboards, against gunicorn and
PostgreSQL for 15 s. No answer may be a 5xx, and the books must balance: every retag the
server accepted has exactly one LabelEvent, and every annotation's version moved once per
accepted retag. The figures belong to the bench; this test asserts only the invariants."""
import pytest

from tests.conftest import _db_env, require_service

pytestmark = pytest.mark.integration

ANNOTATORS, SCIENTISTS, SECONDS = 4, 2, 15


def test_load_no_server_error_and_every_accepted_retag_has_one_event(transactional_db, tmp_path):
    require_service("postgresql")
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the load test runs against PostgreSQL (DATABASE_URL); this run is on SQLite")
    from bench.load import build, measure, start_gunicorn, stop

    # A pool of 6 images retagged directly: annotators collide on them (409s, never overwrites).
    world = build(n_images=600, annotators=ANNOTATORS, scientists=SCIENTISTS, pool=6)
    assert world["suspects"] > 50, "the suspects queue should not run dry in the test"
    proc, base = start_gunicorn(_db_env()["DATABASE_URL"], workers=2, threads=4, log_path=tmp_path / "gunicorn.log")
    try:
        figures = measure(base, world, annotators=ANNOTATORS, scientists=SCIENTISTS, duration=SECONDS,
                          workdir=tmp_path)
    finally:
        stop(proc)

    assert figures["server_errors"] == 0, figures["error_samples"]
    assert figures["errors"] == 0, figures["error_samples"]
    # Everyone logged in and worked: the queue, the retag API and the dashboards were all hit.
    hit = {name for name, e in figures["by_endpoint"].items() if e["requests"]}
    for name in ("POST /accounts/login/ (POST)", "POST /api/suspects/[id]/resolve/", "POST /api/images/[id]/retag/",
                 "GET /runs/[id]/"):
        assert name in hit, sorted(hit)
    assert figures["retags_accepted"] > 0
    assert figures["retags_unanswered"] == 0 and figures["retags_lost"] == 0
    assert figures["retags_accepted"] == figures["retags_in_history"]
    assert figures["images_mismatched"] == [] and figures["versions_mismatched"] == []
