from django.db.models.signals import post_migrate
from django.dispatch import receiver


@receiver(post_migrate)
def create_role_groups(sender, **kwargs):
    if sender.name == "labeling":
        from .services.roles import ensure_groups

        ensure_groups()
