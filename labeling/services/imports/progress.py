"""A job's counters, problems and heartbeat while it runs, written to its row under its attempt."""
from __future__ import annotations

import logging
import time

from django.utils import timezone

from ...models import ImportJob
from .entries import Entry

logger = logging.getLogger(__name__)

MAX_PROBLEMS = 200            # problems kept on the job; ``problems_total`` counts them all
PROGRESS_EVERY_S = 1.0        # how often the job row is updated for the progress bar
State = ImportJob.State


class Superseded(Exception):
    """The job was taken over (its attempt counter moved on): this worker must stop writing."""


# Each row the source lists adds to exactly one of these, so they add up to ``processed``;
# ``missing`` also counts the images a finished sync found gone from the source.
OUTCOMES = ("added", "relabelled", "updated", "unchanged", "corrupt", "missing", "refused")
_COUNTERS = ("total", "processed", *OUTCOMES, "problems_total")


class ImportRun:
    """The job's counters and problems, flushed to its row about once a second. Every write
    names the attempt: one that was taken over raises :class:`Superseded` instead."""

    def __init__(self, job: ImportJob, attempt: int = 1):
        self.job = job
        self.attempt = attempt
        self.flushed_at = 0.0

    def _update(self, **fields) -> None:
        if not ImportJob.objects.filter(pk=self.job.pk, attempts=self.attempt).update(**fields):
            raise Superseded(self.job.pk)

    def begin(self) -> None:
        j = self.job
        for name in _COUNTERS:
            setattr(j, name, 0)  # a job taken over starts over: the sync is idempotent
        j.problems, j.message, j.finished_at = [], "", None
        j.state, j.heartbeat_at = State.RUNNING, timezone.now()
        self._update(problems=[], message="", finished_at=None, heartbeat_at=j.heartbeat_at,
                     **{name: 0 for name in _COUNTERS})

    def set_total(self, total: int) -> None:
        self.job.total = total
        self.flush(force=True)

    def count(self, name: str, n: int = 1) -> None:
        setattr(self.job, name, getattr(self.job, name) + n)

    def problem(self, entry: Entry, reason: str) -> None:
        self.job.problems_total += 1
        if len(self.job.problems) < MAX_PROBLEMS:  # JSON in PostgreSQL holds no NUL byte
            self.job.problems.append({"row": entry.row, "uri": entry.shown.replace("\x00", "\\x00"),
                                      "reason": reason.replace("\x00", "\\x00")})

    def flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.flushed_at < PROGRESS_EVERY_S:
            return
        fields = {name: getattr(self.job, name) for name in _COUNTERS}
        self._update(problems=self.job.problems, heartbeat_at=timezone.now(), **fields)
        self.flushed_at = time.monotonic()

    def finish(self, state: str, message: str) -> None:
        j = self.job
        j.state, j.message, j.finished_at = state, message, timezone.now()
        try:
            self._update(state=state, message=message, finished_at=j.finished_at, problems=j.problems,
                         **{name: getattr(j, name) for name in _COUNTERS})
        except Superseded:
            logger.warning("import job %s: taken over; this worker's outcome (%s) is not recorded", j.pk, state)
            j.refresh_from_db()

    def summary(self) -> str:
        j = self.job
        text = (f"{j.processed} rows: {j.added} added, {j.relabelled} relabelled, {j.updated} updated, "
                f"{j.unchanged} unchanged, {j.missing} now missing, {j.corrupt} corrupt, {j.refused} refused")
        if j.problems_total:
            text += f"; {j.problems_total} problem(s)"
            if j.problems_total > len(j.problems):
                text += f" (the first {len(j.problems)} listed)"
        if self.attempt > 1:
            text += f" (attempt {self.attempt}: the earlier one's worker was lost; what it committed was kept)"
        return text

