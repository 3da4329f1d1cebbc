"""/api/: the resources (a DRF router), the OpenAPI schema and its browsable docs.

Swagger UI's files come from drf-spectacular-sidecar (served as static files), never
from a CDN: the app must work offline.
"""
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views
from .permissions import RolePermission

app_name = "api"

router = DefaultRouter()
router.register("projects", views.ProjectViewSet, basename="project")
router.register("tasks", views.TaskViewSet, basename="task")
router.register("labels", views.LabelViewSet, basename="label")
router.register("images", views.ImageViewSet, basename="image")
router.register("annotations", views.AnnotationViewSet, basename="annotation")
router.register("events", views.LabelEventViewSet, basename="event")
router.register("imports", views.ImportJobViewSet, basename="import")
router.register("storage-roots", views.StorageRootViewSet, basename="storage-root")

urlpatterns = [
    # The schema and the docs are for people with a role, like everything else here.
    path("schema/", SpectacularAPIView.as_view(permission_classes=[RolePermission]), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema", permission_classes=[RolePermission]),
         name="docs"),
    *router.urls,
]
