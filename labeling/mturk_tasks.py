"""Celery tasks for Mechanical Turk: thin wrappers over labeling.services.mturk.

labeling/tasks.py imports these (``from .mturk_tasks import *``) so the worker finds them.
"""
from celery import shared_task

__all__ = ["mturk_send_batch", "mturk_sync_batch", "mturk_sync_open_batches"]


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
