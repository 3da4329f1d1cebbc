"""The quality API: every number the run dashboard, the confusion matrix, the false
negative / false positive grids, the F1-over-runs chart and the image page's prediction
panel show. Read-only, for scientists and admins (annotators get 403, as on the pages).

Thin: each view asks services.quality and returns what it says.
"""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Image, Split, Task, TrainingRun
from ..services import quality, quality_curves
from ..services.roles import SCIENTIST
from .permissions import RolePermission
from .serializers import DetailSerializer, RunStateSerializer


# --- response shapes (for the schema) ------------------------------------------------------

class PRFSerializer(serializers.Serializer):
    precision = serializers.FloatField(allow_null=True)
    recall = serializers.FloatField(allow_null=True)
    f1 = serializers.FloatField(allow_null=True)


class ClassDeltaSerializer(PRFSerializer):
    support = serializers.IntegerField()


class ClassRowSerializer(serializers.Serializer):
    label = serializers.IntegerField()
    name = serializers.CharField()
    precision = serializers.FloatField()
    recall = serializers.FloatField()
    f1 = serializers.FloatField()
    support = serializers.IntegerField()
    delta = ClassDeltaSerializer(allow_null=True, help_text="Change against the previous finished run.")


class SplitMetricsSerializer(serializers.Serializer):
    classes = ClassRowSerializer(many=True)
    macro = PRFSerializer(allow_null=True)
    micro = PRFSerializer(allow_null=True)
    accuracy = serializers.FloatField(allow_null=True)
    support = serializers.IntegerField(allow_null=True)
    macro_delta = PRFSerializer(allow_null=True)
    micro_delta = PRFSerializer(allow_null=True)
    accuracy_delta = serializers.FloatField(allow_null=True)


class RunBriefSerializer(RunStateSerializer):
    task = serializers.IntegerField()
    created_by = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField(allow_null=True)
    n_train = serializers.IntegerField()
    n_test = serializers.IntegerField()
    snapshot_size = serializers.IntegerField()
    parent = serializers.IntegerField(allow_null=True)
    config = serializers.JSONField()


class LabelRefSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


class SplitsSerializer(serializers.Serializer):
    test = SplitMetricsSerializer()
    train = SplitMetricsSerializer()


class DashboardSerializer(serializers.Serializer):
    run = RunBriefSerializer()
    previous = RunBriefSerializer(allow_null=True, help_text="The previous finished run of the task.")
    retags_since_previous = serializers.IntegerField(allow_null=True,
                                                     help_text="Retags of the task between the two runs.")
    labels = LabelRefSerializer(many=True, help_text="The run's labels in model output order.")
    splits = SplitsSerializer()


class ConfusionSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    split = serializers.CharField()
    labels = LabelRefSerializer(many=True)
    matrix = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()),
                                   help_text="Rows: given label; columns: predicted label.")
    row_totals = serializers.ListField(child=serializers.IntegerField())
    col_totals = serializers.ListField(child=serializers.IntegerField())
    shares = serializers.ListField(child=serializers.ListField(child=serializers.FloatField()),
                                   help_text="Each cell over its row total.")
    total = serializers.IntegerField()
    correct = serializers.IntegerField()


class PredictedSerializer(serializers.Serializer):
    """One prediction's labels, as the grids and the image page both give them."""

    split = serializers.CharField()
    given_label = serializers.IntegerField(allow_null=True)
    given_name = serializers.CharField(allow_null=True)
    predicted_label = serializers.IntegerField()
    predicted_name = serializers.CharField(allow_null=True)
    confidence = serializers.FloatField()
    current_label = serializers.IntegerField(allow_null=True, help_text="The image's label now.")


class GridItemSerializer(PredictedSerializer):
    prediction = serializers.IntegerField()
    cursor = serializers.CharField()
    image = serializers.IntegerField()
    key = serializers.CharField()
    status = serializers.CharField()
    checksum = serializers.CharField()
    current_name = serializers.CharField(allow_null=True)
    version = serializers.IntegerField(help_text="The annotation version to send with a retag.")


class GridPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Rows of the whole grid (from the confusion matrix).")
    next = serializers.CharField(allow_null=True, help_text="Pass as ``after`` for the next page.")
    previous = serializers.CharField(allow_null=True, help_text="Pass as ``before`` for the previous page.")
    results = GridItemSerializer(many=True)


class SeriesRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    parent = serializers.IntegerField(allow_null=True)
    macro_f1 = serializers.FloatField(allow_null=True)


class SeriesLabelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    f1 = serializers.ListField(child=serializers.FloatField(allow_null=True), help_text="One value per run.")


class F1SeriesSerializer(serializers.Serializer):
    task = serializers.IntegerField()
    split = serializers.CharField()
    runs = SeriesRunSerializer(many=True)
    labels = SeriesLabelSerializer(many=True)


class TopProbSerializer(serializers.Serializer):
    label = serializers.IntegerField()
    name = serializers.CharField(allow_null=True)
    prob = serializers.FloatField()


class ImagePredictionSerializer(PredictedSerializer):
    correct = serializers.BooleanField()
    top = TopProbSerializer(many=True)


class TaskPredictionSerializer(serializers.Serializer):
    task = serializers.IntegerField()
    task_name = serializers.CharField()
    run = serializers.IntegerField(allow_null=True, help_text="The task's latest finished run.")
    prediction = ImagePredictionSerializer(allow_null=True)


class ImagePredictionsSerializer(serializers.Serializer):
    image = serializers.IntegerField()
    tasks = TaskPredictionSerializer(many=True)


class CurveSerializer(serializers.Serializer):
    precision = serializers.ListField(child=serializers.FloatField())
    recall = serializers.ListField(child=serializers.FloatField())
    threshold = serializers.ListField(child=serializers.FloatField(),
                                      help_text="The class probability at which each point is reached.")


class HistogramSerializer(serializers.Serializer):
    correct = serializers.ListField(child=serializers.IntegerField())
    wrong = serializers.ListField(child=serializers.IntegerField())


class HistogramsSerializer(serializers.Serializer):
    all = HistogramSerializer(help_text="Every prediction of the split read.")
    predicted = HistogramSerializer(help_text="The predictions of the chosen class.")


class PRCurvesSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    split = serializers.CharField()
    label = LabelRefSerializer()
    labels = LabelRefSerializer(many=True)
    total = serializers.IntegerField(help_text="Predictions of the split with a given label.")
    n = serializers.IntegerField(help_text="Predictions read: all, or a seeded sample when there are more "
                                           f"than {quality_curves.SAMPLE:,}.")
    sampled = serializers.BooleanField()
    positives = serializers.IntegerField(help_text="Images of the chosen class among those read.")
    average_precision = serializers.FloatField(allow_null=True, help_text="None: no image of the class.")
    curve = CurveSerializer(help_text=f"At most {quality_curves.CURVE_POINTS} points, recall decreasing.")
    edges = serializers.ListField(child=serializers.FloatField(), help_text="Confidence bin edges.")
    histogram = HistogramsSerializer()


# --- views ------------------------------------------------------------------------------------

SPLIT_PARAM = OpenApiParameter("split", str, enum=list(Split.values), description="Default: test.")


def requested_split(request) -> str:
    """The ``split`` parameter of :data:`SPLIT_PARAM`: test when it is not given."""
    return request.query_params.get("split") or Split.TEST

PAGE_PARAMS = [
    SPLIT_PARAM,
    OpenApiParameter("after", str, description="Cursor: the page after this one (``next``)."),
    OpenApiParameter("before", str, description="Cursor: the page before this one (``previous``)."),
    OpenApiParameter("page_size", int, description=f"Default {quality.PAGE_SIZE}, at most 500."),
]


class QualityView(APIView):
    """Scientists and admins read; nobody writes here."""

    permission_classes = [RolePermission]
    read_role = SCIENTIST
    write_role = SCIENTIST


class RunDashboardView(QualityView):
    @extend_schema(parameters=[], responses={200: DashboardSerializer})
    def get(self, request, run_id):
        """Per-class precision, recall, F1 and support of both splits, macro/micro averages,
        and the change of each against the task's previous finished run, with the number
        of retags between the two runs."""
        run = get_object_or_404(TrainingRun, id=run_id)
        return Response(quality.dashboard(run))


class RunConfusionView(QualityView):
    @extend_schema(parameters=[SPLIT_PARAM], responses={200: ConfusionSerializer, 400: DetailSerializer})
    def get(self, request, run_id):
        """The confusion matrix of a split in the run's label order."""
        run = get_object_or_404(TrainingRun, id=run_id)
        return Response(quality.confusion(run, requested_split(request)))


class _GridView(QualityView):
    kind = quality.FN

    def page(self, request, run_id, label_id, predicted_id=None):
        run = get_object_or_404(TrainingRun, id=run_id)
        p = request.query_params
        size = int(p.get("page_size") or quality.PAGE_SIZE)  # not a number: a 400 (exceptions.py)
        q = quality.grid_query(run, kind=self.kind, label_id=label_id, predicted_id=predicted_id, split=p.get("split"))
        page = quality.grid_page(q, after=p.get("after"), before=p.get("before"), size=size)
        return Response({"count": page.count, "next": page.next, "previous": page.prev, "results": page.items})


class FalseNegativesView(_GridView):
    kind = quality.FN

    @extend_schema(parameters=[OpenApiParameter("label", int, required=True), *PAGE_PARAMS],
                   responses={200: GridPageSerializer, 400: DetailSerializer})
    def get(self, request, run_id):
        """Images labelled ``label`` that the run predicted as something else, most
        confident first (keyset pages)."""
        return self.page(request, run_id, request.query_params.get("label"))


class FalsePositivesView(_GridView):
    kind = quality.FP

    @extend_schema(parameters=[OpenApiParameter("label", int, required=True), *PAGE_PARAMS],
                   responses={200: GridPageSerializer, 400: DetailSerializer})
    def get(self, request, run_id):
        """Images the run predicted as ``label`` that carry another label, most confident first."""
        return self.page(request, run_id, request.query_params.get("label"))


class ConfusionCellView(_GridView):
    kind = quality.CELL

    @extend_schema(parameters=[OpenApiParameter("given", int, required=True),
                               OpenApiParameter("predicted", int, required=True), *PAGE_PARAMS],
                   responses={200: GridPageSerializer, 400: DetailSerializer})
    def get(self, request, run_id):
        """The images of one confusion cell: given ``given``, predicted ``predicted``."""
        return self.page(request, run_id, request.query_params.get("given"), request.query_params.get("predicted"))


class TaskF1SeriesView(QualityView):
    @extend_schema(parameters=[SPLIT_PARAM], responses={200: F1SeriesSerializer, 400: DetailSerializer})
    def get(self, request, task_id):
        """F1 of each class of the task over its finished runs, oldest first."""
        task = get_object_or_404(Task, id=task_id)
        return Response(quality.f1_series(task, requested_split(request)))


class ImagePredictionsView(QualityView):
    @extend_schema(responses={200: ImagePredictionsSerializer})
    def get(self, request, image_id):
        """What the latest finished run of every task predicted for the image, with the
        top probabilities."""
        image = get_object_or_404(Image, id=image_id)
        return Response({"image": image.id, "tasks": quality.image_predictions(image)})


class RunPRCurvesView(QualityView):
    @extend_schema(parameters=[OpenApiParameter("label", int, required=True), SPLIT_PARAM],
                   responses={200: PRCurvesSerializer, 400: DetailSerializer})
    def get(self, request, run_id):
        """The precision-recall curve of one class against the rest (with average precision)
        and the confidence histograms of correct and wrong predictions, from the stored
        probabilities; at most a seeded sample of predictions is read."""
        run = get_object_or_404(TrainingRun, id=run_id)
        label = request.query_params.get("label")
        return Response(quality_curves.pr_curves(run, label, split=requested_split(request)))
