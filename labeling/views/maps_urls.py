"""The embeddings map page; included at the site root."""
from django.urls import path

from . import maps

urlpatterns = [
    path("runs/<int:run_id>/map/", maps.run_map, name="run_map"),
]
