"""The app's signals and their receivers (connected in LabelingConfig.ready)."""
from django.db.models.signals import post_migrate
from django.dispatch import Signal, receiver

# Sent by services.retag after a person's retag (annotator, Mechanical Turk) is written, with
# ``task``: the retag service need not know who acts on it.
human_retag = Signal()


@receiver(post_migrate)
def create_role_groups(sender, **kwargs):
    if sender.name == "labeling":
        from .services.roles import ensure_groups

        ensure_groups()


@receiver(human_retag)
def retrain_when_due(sender, task, **kwargs):
    """Automatic retraining: check after the retag commits whether the project wants a new run."""
    from .services.runs import schedule_auto_retrain

    schedule_auto_retrain(task)
