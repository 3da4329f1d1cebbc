"""/api/mturk/: batches and workers (admins only)."""
from rest_framework.routers import DefaultRouter

from . import mturk

app_name = "mturk_api"

router = DefaultRouter()
router.register("batches", mturk.MTurkBatchViewSet, basename="batch")
router.register("workers", mturk.MTurkWorkerViewSet, basename="worker")
urlpatterns = router.urls
