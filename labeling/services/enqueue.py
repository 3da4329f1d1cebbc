"""Sending work to the Celery workers: one rule for every job.

A job is sent after the transaction that created it commits (the worker must find its
row), and a broker that cannot be reached fails the job visibly, with the reason, instead
of leaving it "queued" for ever: nothing else would ever send it again. This is Celery's
``delay_on_commit`` plus that failure rule, which ``delay_on_commit`` itself lacks (an
exception in an on-commit callback would surface as a 500 after the work was saved).
"""
from __future__ import annotations

import logging
from typing import Callable

from django.db import transaction

logger = logging.getLogger(__name__)

Fail = Callable[[str], None]


def send(task_name: str, *args, fail: Fail | None = None) -> str | None:
    """Send ``labeling.tasks.<task_name>(*args)`` now. ``None`` when it was sent; otherwise
    the reason, after ``fail(reason)`` has recorded it on the job."""
    from .. import tasks

    try:
        getattr(tasks, task_name).delay(*args)
    except Exception as e:  # noqa: BLE001 - any broker error: the job says why it did not start
        reason = f"could not be queued: {e}"
        logger.exception("%s%s %s", task_name, args, reason)
        if fail is not None:
            fail(reason)
        return reason
    return None


def send_on_commit(task_name: str, *args, fail: Fail | None = None) -> None:
    """:func:`send`, once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: send(task_name, *args, fail=fail))
