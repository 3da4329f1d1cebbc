from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/", include("labeling.api.runs_urls")),  # training runs (runs engineer; lead to confirm)
    path("api/", include("labeling.api.suspects_urls")),  # suspects (suspects engineer; lead to confirm)
    path("api/", include("labeling.api.maps_urls")),
    path("api/", include("labeling.api.urls")),
    path("api/", include("labeling.api.quality_urls")),  # quality API (quality engineer; lead to confirm)
    path("api/mturk/", include("labeling.api.mturk_urls")),  # MTurk (temporary wiring for tests; lead to confirm)
    path("mturk/", include("labeling.views.mturk_urls")),  # MTurk (temporary wiring for tests; lead to confirm)
    path("", include("labeling.views.runs_urls")),  # runs and quality pages (quality engineer; lead to confirm)
    path("", include("labeling.views.suspects_urls")),  # suspects pages (suspects engineer; lead to confirm)
    path("", include("labeling.views.maps_urls")),
    path("", include("labeling.views.urls")),
]

# The 403 page says which role a page needs and which the person has.
handler403 = "labeling.views.common.forbidden"
