"""The quality API (read-only, scientists and admins); included at "api/"."""
from django.urls import path

from . import quality

app_name = "quality_api"

urlpatterns = [
    path("runs/<int:run_id>/dashboard/", quality.RunDashboardView.as_view(), name="dashboard"),
    path("runs/<int:run_id>/confusion/", quality.RunConfusionView.as_view(), name="confusion"),
    path("runs/<int:run_id>/false-negatives/", quality.FalseNegativesView.as_view(), name="false_negatives"),
    path("runs/<int:run_id>/false-positives/", quality.FalsePositivesView.as_view(), name="false_positives"),
    path("runs/<int:run_id>/confusion-cell/", quality.ConfusionCellView.as_view(), name="confusion_cell"),
    path("runs/<int:run_id>/pr-curves/", quality.RunPRCurvesView.as_view(), name="pr_curves"),
    path("tasks/<int:task_id>/f1-series/", quality.TaskF1SeriesView.as_view(), name="f1_series"),
    path("images/<int:image_id>/predictions/", quality.ImagePredictionsView.as_view(), name="image_predictions"),
]
