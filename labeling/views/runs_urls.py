"""Training runs and quality pages (scientists and admins); included at the site root."""
from django.urls import path

from . import runs

urlpatterns = [
    path("p/<slug:slug>/runs/", runs.run_list, name="run_list"),
    path("p/<slug:slug>/runs/new/", runs.run_new, name="run_new"),
    path("p/<slug:slug>/runs/f1/", runs.task_f1, name="task_f1"),
    path("runs/<int:run_id>/", runs.run_dashboard, name="run_dashboard"),
    path("runs/<int:run_id>/progress/", runs.run_progress, name="run_progress"),
    path("runs/<int:run_id>/confusion/", runs.run_confusion, name="run_confusion"),
    path("runs/<int:run_id>/images/", runs.run_grid, name="run_grid"),
    path("runs/<int:run_id>/cancel/", runs.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/retrain/", runs.run_retrain, name="run_retrain"),
]
