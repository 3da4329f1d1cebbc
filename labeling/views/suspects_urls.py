"""Suspects pages (annotators and up; starting and cleaning for scientists); included at the root."""
from django.urls import path

from . import duplicates, suspects

urlpatterns = [
    path("p/<slug:slug>/suspects/", suspects.suspect_runs, name="suspect_runs"),
    path("runs/<int:run_id>/suspects/start/", suspects.suspect_start, name="suspect_start"),
    path("runs/<int:run_id>/suspects/estimate", suspects.suspect_estimate, name="suspect_estimate"),
    path("suspects/<int:sr_id>/", suspects.suspect_run, name="suspect_run"),
    path("suspects/<int:sr_id>/queue/", suspects.suspect_queue, name="suspect_queue"),
    path("suspects/<int:sr_id>/clusters/", suspects.suspect_clusters, name="suspect_clusters"),
    path("suspects/<int:sr_id>/clusters/retag", suspects.cluster_retag, name="suspect_cluster_retag"),
    path("suspects/<int:sr_id>/exclude", suspects.exclude, name="suspect_exclude"),
    path("suspects/<int:sr_id>/restore", suspects.restore, name="suspect_restore"),
    path("suspects/<int:sr_id>/duplicates/", duplicates.near_duplicates, name="suspect_duplicates"),
    path("runs/<int:run_id>/cleaning/start", suspects.cleaning_start, name="cleaning_start"),
    path("cleaning/<int:job_id>/", suspects.cleaning_run, name="cleaning_run"),
    path("cleaning/<int:job_id>/restore", suspects.cleaning_restore, name="cleaning_restore"),
]
