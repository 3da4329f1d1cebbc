"""Celery tasks: thin wrappers that call services (which hold the logic and are tested
without a broker)."""
from celery import shared_task
from django.conf import settings

from .models import ImportJob
from .services.imports import run_import


@shared_task(acks_late=True, ignore_result=True)
def run_import_job(job_id: int) -> None:
    """Run a queued import. Redelivery is safe: a finished job is not rerun, and an
    interrupted one starts over (the import is an idempotent sync)."""
    job = ImportJob.objects.filter(pk=job_id).first()
    if job is not None:
        run_import(job)


@shared_task(ignore_result=True, name="labeling.tasks.check_stale_imports")
def check_stale_imports() -> None:
    """Periodic (CELERY_BEAT_SCHEDULE): take over, or fail, imports whose worker stopped beating."""
    from .services.imports import take_over_stale_imports

    take_over_stale_imports()


# --- Training runs (services/runs.py holds the logic and the lease protocol) -------------

# The training tasks' time limits (settings.RUN_TIME_LIMIT_S, generous): at the soft one the
# run stops its training process and fails with the reason; the hard one follows.
TRAINING_LIMITS = {"soft_time_limit": settings.RUN_TIME_LIMIT_S,
                   "time_limit": settings.RUN_TIME_LIMIT_S + settings.TASK_TIME_LIMIT_GRACE_S}


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="labeling.tasks.train_run", **TRAINING_LIMITS)
def train_run(self, run_id: int) -> None:
    """Execute a training run (routed to the gpu queue) in a training process of its own
    (services.run_process). A redelivered message for a run that another live worker holds,
    or that is finished, does nothing (services.runs.claim_run)."""
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


# --- Suspects (services/suspects/ holds the logic; the folds are ordinary training runs) ----

@shared_task(acks_late=True, ignore_result=True, name="labeling.tasks.suspects_prepare")
def suspects_prepare(suspect_run_id: int) -> None:
    """Create the fold runs of a suspects run and send them to the gpu queue (idempotent)."""
    from .services import suspects

    suspects.prepare_folds(suspect_run_id)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="labeling.tasks.train_suspects_fold", **TRAINING_LIMITS)
def train_suspects_fold(self, suspect_run_id: int, fold_run_id: int) -> None:
    """Train one fold (routed to the gpu queue by its name), then advance the suspects run."""
    from .services import suspects
    from .services.runs import default_worker_id

    suspects.execute_fold(suspect_run_id, fold_run_id, worker=default_worker_id(self.request.hostname))


@shared_task(acks_late=True, ignore_result=True, name="labeling.tasks.suspects_score")
def suspects_score(suspect_run_id: int) -> None:
    """Combine the folds, score and store the suspects (a retry replaces the rows)."""
    from .services import suspects

    suspects.score_suspect_run(suspect_run_id)


@shared_task(ignore_result=True, name="labeling.tasks.advance_suspect_runs")
def advance_suspect_runs() -> None:
    """Periodic: move suspects runs on whose folds finished without telling them."""
    from .services import suspects

    suspects.advance_open_runs()


# --- Automatic cleaning rounds (services/autoclean.py holds the logic) -----------------------

@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
             name="labeling.tasks.train_autoclean")
def train_autoclean(self, cleaning_run_id: int) -> None:
    """Run a cleaning job's rounds (routed to the gpu queue by its name: each round trains)."""
    from .services import autoclean
    from .services.runs import default_worker_id

    autoclean.execute_cleaning(cleaning_run_id, worker=default_worker_id(self.request.hostname))


# --- Mechanical Turk (services/mturk holds the logic) -------------------------------------

@shared_task(name="labeling.mturk_send_batch")
def mturk_send_batch(batch_id: int) -> str:
    from .models import MTurkBatch
    from .services.mturk import send_batch

    batch = send_batch(MTurkBatch.objects.get(pk=batch_id))
    return f"batch {batch.id}: {batch.hits.exclude(hit_id='').count()} HITs"


@shared_task(name="labeling.mturk_sync_batch")
def mturk_sync_batch(batch_id: int) -> str:
    from .services.mturk.sync import sync_batch_locked

    r = sync_batch_locked(batch_id)
    return "another sync is running" if r is None else f"{r.new_assignments} new assignments"


@shared_task(name="labeling.mturk_sync_open_batches")
def mturk_sync_open_batches() -> dict:
    from .services.mturk.sync import sync_open_batches

    return sync_open_batches()
