"""/api/: every resource on one router, the plain views of the suspects and quality
modules beside it, the OpenAPI schema and its browsable docs. ``/api/`` lists them all.

Swagger UI's files come from drf-spectacular-sidecar (served as static files), never
from a CDN: the app must work offline.
"""
from django.contrib.auth.views import redirect_to_login
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import routers
from rest_framework.exceptions import NotAuthenticated, PermissionDenied

from . import maps, mturk, quality, runs, suspects, views
from .permissions import RolePermission

app_name = "api"


class RetagAPIRoot(routers.APIRootView):
    """Retag's JSON API: the same data and rules as the pages, for scripts and the pages'
    own JavaScript.

    Sign in with the session (the pages' cookie, with the `X-CSRFToken` header on writes)
    or HTTP basic. Your role decides what you may call: annotators read and retag,
    scientists also train and read the quality figures, admins also manage projects,
    imports, storage roots and Mechanical Turk. A retag sends the annotation version it
    saw: if the label changed since, nothing is written and 409 says what it is now.
    Errors are `{"detail": ...}` or field errors. The whole description: `/api/docs/`.
    """

    def get_view_name(self):
        return "Retag API"


class Router(routers.DefaultRouter):
    """DefaultRouter whose root also lists the plain (non-viewset) list views."""

    APIRootView = RetagAPIRoot

    def __init__(self):
        super().__init__()
        self.plain_roots = {}  # prefix -> url name of a list view mounted by path()

    def get_api_root_view(self, api_urls=None):
        roots = {prefix: self.routes[0].name.format(basename=basename) for prefix, _, basename in self.registry}
        return self.APIRootView.as_view(api_root_dict={**roots, **self.plain_roots})


router = Router()
router.register("projects", views.ProjectViewSet, basename="project")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("labels", views.LabelViewSet, basename="label")
router.register("images", views.ImageViewSet, basename="image")
router.register("annotations", views.AnnotationViewSet, basename="annotation")
router.register("events", views.LabelEventViewSet, basename="event")
router.register("imports", views.ImportJobViewSet, basename="import")
router.register("storage-roots", views.StorageRootViewSet, basename="storage-root")
router.register("runs", runs.RunViewSet, basename="run")
router.register("mturk/batches", mturk.MTurkBatchViewSet, basename="mturk-batch")
router.register("mturk/workers", mturk.MTurkWorkerViewSet, basename="mturk-worker")
router.plain_roots.update({"suspect-runs": "suspect-run-list", "cleaning-runs": "cleaning-run-list"})


class Docs(SpectacularSwaggerView):
    """Swagger UI, for people with a role. It is a page a person opens in a browser: one who
    is not signed in goes to the login page (and back here), not to a "no role" 403."""

    permission_classes = [RolePermission]
    url_name = "api:schema"

    def handle_exception(self, exc):
        if (isinstance(exc, (NotAuthenticated, PermissionDenied)) and not self.request.user.is_authenticated
                and "HTTP_AUTHORIZATION" not in self.request.META):  # wrong credentials: the API's 401
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)


plain = [
    # suspects (labeling/api/suspects.py)
    path("suspect-runs/", suspects.SuspectRunList.as_view(), name="suspect-run-list"),
    path("suspect-runs/<int:pk>/", suspects.SuspectRunDetail.as_view(), name="suspect-run-detail"),
    path("suspect-runs/<int:pk>/suspects/", suspects.SuspectList.as_view(), name="suspect-run-suspects"),
    path("suspect-runs/<int:pk>/next/", suspects.NextSuspect.as_view(), name="suspect-run-next"),
    path("suspect-runs/<int:pk>/clusters/", suspects.ClusterView.as_view(), name="suspect-run-clusters"),
    path("suspect-runs/<int:pk>/retag-group/", suspects.RetagGroup.as_view(), name="suspect-run-retag-group"),
    path("suspect-runs/<int:pk>/exclude/", suspects.Exclude.as_view(), name="suspect-run-exclude"),
    path("suspect-runs/<int:pk>/restore/", suspects.Restore.as_view(), name="suspect-run-restore"),
    path("suspect-runs/<int:pk>/near-duplicates/", suspects.NearDuplicates.as_view(), name="suspect-run-near-duplicates"),
    path("suspect-runs/<int:pk>/quality/", suspects.SuspectRunQuality.as_view(), name="suspect-run-quality"),
    path("cleaning-runs/", suspects.CleaningRunList.as_view(), name="cleaning-run-list"),
    path("cleaning-runs/<int:pk>/", suspects.CleaningRunDetail.as_view(), name="cleaning-run-detail"),
    path("cleaning-runs/<int:pk>/restore/", suspects.CleaningRestore.as_view(), name="cleaning-run-restore"),
    path("suspects/<int:pk>/resolve/", suspects.ResolveSuspect.as_view(), name="suspect-resolve"),
    path("suspects/<int:pk>/undo/", suspects.UndoDecision.as_view(), name="suspect-undo"),
    path("images/<int:pk>/similar/", suspects.SimilarImages.as_view(), name="image-similar"),
    # quality, read-only (labeling/api/quality.py)
    path("runs/<int:run_id>/dashboard/", quality.RunDashboardView.as_view(), name="run-dashboard"),
    path("runs/<int:run_id>/confusion/", quality.RunConfusionView.as_view(), name="run-confusion"),
    path("runs/<int:run_id>/false-negatives/", quality.FalseNegativesView.as_view(), name="run-false-negatives"),
    path("runs/<int:run_id>/false-positives/", quality.FalsePositivesView.as_view(), name="run-false-positives"),
    path("runs/<int:run_id>/confusion-cell/", quality.ConfusionCellView.as_view(), name="run-confusion-cell"),
    path("runs/<int:run_id>/pr-curves/", quality.RunPRCurvesView.as_view(), name="run-pr-curves"),
    path("tasks/<int:task_id>/f1-series/", quality.TaskF1SeriesView.as_view(), name="task-f1-series"),
    path("images/<int:image_id>/predictions/", quality.ImagePredictionsView.as_view(), name="image-predictions"),
    # the embeddings map, bulk retag and undo (labeling/api/maps.py)
    path("runs/<int:run_id>/map/", maps.RunMapView.as_view(), name="run-map"),
    path("retag/bulk/", maps.BulkRetagView.as_view(), name="bulk-retag"),
    path("retag/undo/", maps.UndoRetagView.as_view(), name="undo-retag"),
]

urlpatterns = [
    # The schema and the docs are for people with a role, like everything else here.
    path("schema/", SpectacularAPIView.as_view(permission_classes=[RolePermission]), name="schema"),
    path("docs/", Docs.as_view(), name="docs"),
    *plain,
    *router.urls,
]
