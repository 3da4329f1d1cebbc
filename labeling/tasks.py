"""Celery tasks: thin wrappers that call services (which hold the logic and are tested
without a broker)."""
from celery import shared_task

from .models import ImportJob
from .services.imports import run_import
from .mturk_tasks import *  # noqa: E402,F401,F403  (the worker finds the MTurk tasks through this module)


@shared_task(acks_late=True, ignore_result=True)
def run_import_job(job_id: int) -> None:
    """Run a queued import. Redelivery is safe: a finished job is not rerun, and an
    interrupted one starts over (the import is an idempotent sync)."""
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is not None:
        run_import(job)


# --- Training runs (services/runs.py holds the logic and the lease protocol) -------------

@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="labeling.tasks.train_run")
def train_run(self, run_id: int) -> None:
    """Execute a training run (routed to the gpu queue). A redelivered message for a run that
    another live worker holds, or that is finished, does nothing (services.runs.claim_run)."""
    from .services.runs import default_worker_id, execute_run

    execute_run(run_id, worker=default_worker_id(self.request.hostname))


@shared_task(ignore_result=True, name="labeling.tasks.check_stale_runs")
def check_stale_runs() -> None:
    """Periodic (CELERY_BEAT_SCHEDULE): resume or fail runs whose worker stopped beating."""
    from .services import runs

    runs.check_stale_runs()


@shared_task(acks_late=True, ignore_result=True, name="labeling.tasks.auto_retrain")
def auto_retrain(task_id: int) -> None:
    """After retags: start an automatic retrain when the project asks for one (guarded)."""
    from .models import Task
    from .services import runs

    task = Task.objects.filter(pk=task_id).first()
    if task is not None:
        runs.maybe_auto_retrain(task)
