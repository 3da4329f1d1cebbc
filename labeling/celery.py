"""The Celery app. Tasks live in labeling/tasks.py and only call services."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labeling.settings")

app = Celery("retag")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
