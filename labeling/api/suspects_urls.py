"""/api/ suspects routes (see labeling/api/suspects.py); included at api/ before the main API urls."""
from django.urls import path

from . import suspects as v

urlpatterns = [
    path("suspect-runs/", v.SuspectRunList.as_view(), name="suspect_run_list_api"),
    path("suspect-runs/<int:pk>/", v.SuspectRunDetail.as_view(), name="suspect_run_api"),
    path("suspect-runs/<int:pk>/suspects/", v.SuspectList.as_view(), name="suspect_list_api"),
    path("suspect-runs/<int:pk>/next/", v.NextSuspect.as_view(), name="suspect_next_api"),
    path("suspect-runs/<int:pk>/clusters/", v.ClusterView.as_view(), name="suspect_clusters_api"),
    path("suspect-runs/<int:pk>/retag-group/", v.RetagGroup.as_view(), name="suspect_retag_group_api"),
    path("suspect-runs/<int:pk>/exclude/", v.Exclude.as_view(), name="suspect_exclude_api"),
    path("suspect-runs/<int:pk>/restore/", v.Restore.as_view(), name="suspect_restore_api"),
    path("suspect-runs/<int:pk>/near-duplicates/", v.NearDuplicates.as_view(), name="suspect_neardup_api"),
    path("suspect-runs/<int:pk>/quality/", v.SuspectRunQuality.as_view(), name="suspect_quality_api"),
    path("cleaning-runs/", v.CleaningRunList.as_view(), name="cleaning_run_list_api"),
    path("cleaning-runs/<int:pk>/", v.CleaningRunDetail.as_view(), name="cleaning_run_api"),
    path("cleaning-runs/<int:pk>/restore/", v.CleaningRestore.as_view(), name="cleaning_restore_api"),
    path("suspects/<int:pk>/resolve/", v.ResolveSuspect.as_view(), name="suspect_resolve_api"),
    path("images/<int:pk>/similar/", v.SimilarImages.as_view(), name="image_similar_api"),
]
