"""The embeddings map and bulk retag and undo API (labeling/api/maps.py); included at "api/"."""
from django.urls import path

from . import maps

app_name = "maps_api"

urlpatterns = [
    path("runs/<int:run_id>/map/", maps.RunMapView.as_view(), name="run_map"),
    path("retag/bulk/", maps.BulkRetagView.as_view(), name="bulk_retag"),
    path("retag/undo/", maps.UndoRetagView.as_view(), name="undo_retag"),
]
