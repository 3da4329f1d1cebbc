"""Mechanical Turk pages; included at "mturk/"."""
from django.urls import path

from . import mturk

urlpatterns = [
    path("", mturk.batch_list, name="mturk_batches"),
    path("new/", mturk.batch_new, name="mturk_new"),
    path("workers/", mturk.workers, name="mturk_workers"),
    # Signed, expiring links for workers (no login): see labeling.middleware.OPEN_PREFIXES.
    path("image/<str:token>/", mturk.signed_image, name="mturk_image"),
    path("<int:batch_id>/", mturk.batch_detail, name="mturk_batch"),
    path("<int:batch_id>/send/", mturk.batch_send, name="mturk_send"),
    path("<int:batch_id>/sync/", mturk.batch_sync, name="mturk_sync"),
    path("<int:batch_id>/apply/", mturk.batch_apply, name="mturk_apply"),
    path("<int:batch_id>/export/", mturk.batch_export, name="mturk_export"),
    path("<int:batch_id>/import/", mturk.batch_import, name="mturk_import"),
]
