"""/api/runs/: training runs (see labeling/api/runs.py). Included at api/ before the main API urls."""
from rest_framework.routers import SimpleRouter

from . import runs

app_name = "runs_api"

router = SimpleRouter()
router.register("runs", runs.RunViewSet, basename="run")
urlpatterns = router.urls
