from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from labeling.views.common import static_file

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/", include("labeling.api.urls")),  # every API module (labeling/api/urls.py)
    path("mturk/", include("labeling.views.mturk_urls")),  # Mechanical Turk pages
    path("", include("labeling.views.runs_urls")),  # runs and quality pages
    path("", include("labeling.views.suspects_urls")),  # suspects pages
    path("", include("labeling.views.maps_urls")),  # the embeddings map page
    path("", include("labeling.views.urls")),
]
if settings.SERVE_STATIC:
    # The static files of STATIC_ROOT, through the normal request handling (scripts/run.sh runs
    # runserver with --nostatic): a path out of the folder (``..%2f``) is a 400 there, where
    # runserver's own static handler answered 500.
    urlpatterns.append(path(settings.STATIC_URL.lstrip("/") + "<path:path>", static_file, name="static"))

# The 403 page says which role a page needs and which the person has.
handler403 = "labeling.views.common.forbidden"
# Under /api/ every error is JSON ({"detail": ...}), also those raised before DRF runs.
handler400 = "labeling.api.exceptions.bad_request"
handler404 = "labeling.api.exceptions.not_found"
handler500 = "labeling.api.exceptions.server_error"
