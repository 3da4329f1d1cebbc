"""Training runs over the API (scientists and admins): list, read, start, cancel, retrain,
poll progress, per-class metrics. Thin: services.runs does the work.

    GET  /api/runs/?task=&project=&state=     newest first
    POST /api/runs/            {"task": id, "config": {...}}   201, or 400 with "errors"
    GET  /api/runs/{id}/                      lineage, progress, history, metrics
    GET  /api/runs/{id}/progress/?since=N     what a live page polls (history from point N)
    GET  /api/runs/{id}/class-metrics/        precision, recall, F1, support per split and label
    POST /api/runs/{id}/cancel/               200, or 409 when it already finished
    POST /api/runs/{id}/retrain/              201: same config, current labels, parent = this run
    GET  /api/runs/default-config/?task=id    the config a start form shows first
"""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from mlcore.config import BASIC_OPTIONS, OPTIONS, USER_OPTIONS

from ..models import ClassMetric, Task, TrainingRun
from ..services import runs as run_service
from ..services.roles import SCIENTIST
from .pagination import RunPagination
from .views import ById
from .serializers import FiniteJSONField, IdField, RunStateSerializer


class RunListSerializer(serializers.ModelSerializer):
    task_name = serializers.CharField(source="task.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TrainingRun
        fields = ["id", "project", "task", "task_name", "state", "state_reason", "trigger", "parent", "created_by",
                  "created_at", "started_at", "finished_at", "config", "n_train", "n_test", "test_macro_f1",
                  "progress", "attempts", "device"]
        read_only_fields = fields


class RunSerializer(RunListSerializer):
    class Meta(RunListSerializer.Meta):
        fields = RunListSerializer.Meta.fields + [
            "cancel_requested", "snapshot_at", "manifest_uri", "manifest_sha256", "label_ids", "label_names",
            "code_version", "worker", "heartbeat_at", "output_uri", "weights_uri", "history", "metrics", "timings"]
        read_only_fields = fields


def config_schema() -> dict:
    """The OpenAPI schema of a run's config, from mlcore.config: the fields a user may set,
    their types, bounds, choices and defaults."""
    types = {int: "integer", float: "number", bool: "boolean", str: "string"}
    properties = {}
    for name in USER_OPTIONS:
        o = OPTIONS[name]
        p = {"type": types[o.kind], "description": o.help, "default": o.default}
        p.update({k: v for k, v in (("minimum", o.min), ("maximum", o.max)) if v is not None})
        if o.choices is not None:
            p["enum"] = list(o.choices)
        if o.nullable:
            p["nullable"] = True
        properties[name] = p
    return {"type": "object", "properties": properties, "additionalProperties": False}


@extend_schema_field(config_schema())
class ConfigField(FiniteJSONField):
    """A run's config: an object of settings (services.runs checks the names and values)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("config is an object of settings, e.g. {\"epochs\": 3}")
        return value


class RunCreateSerializer(serializers.Serializer):
    task = IdField(queryset=Task.objects.all())
    config = ConfigField(required=False, default=dict,
                         help_text=f"mlcore's training options; {', '.join(BASIC_OPTIONS)} are filled in "
                                   f"with their defaults")


class RunErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(child=serializers.CharField(), required=False)


class ProgressSerializer(RunStateSerializer):
    """services.quality.run_status: what the live progress page draws."""

    finished = serializers.BooleanField(help_text="done, failed or cancelled: stop polling.")
    cancel_requested = serializers.BooleanField()
    progress = serializers.DictField(help_text="The latest point: phase, epoch, step, loss, images_per_s ...")
    overall = serializers.DictField(help_text="The whole run's share done (0..1) and ETA in seconds.")
    loss_curve = serializers.DictField(help_text="train and val points, and where the axis is clipped.")
    validation = serializers.DictField(help_text="Which images the validation loss is measured on.")
    last_train = serializers.DictField(allow_null=True, help_text="The latest training point.")
    history = serializers.ListField(child=serializers.DictField(), help_text="Points from ``since`` on.")
    history_len = serializers.IntegerField(help_text="Pass it as ``since`` next time.")
    attempts = serializers.IntegerField()
    heartbeat_at = serializers.DateTimeField(allow_null=True)


class ClassMetricSerializer(serializers.ModelSerializer):
    label_name = serializers.CharField(source="label.name", read_only=True)

    class Meta:
        model = ClassMetric
        fields = ["split", "label", "label_name", "precision", "recall", "f1", "support"]
        read_only_fields = fields


@extend_schema(parameters=[
    OpenApiParameter("task", OpenApiTypes.INT, description="only runs of this task"),
    OpenApiParameter("project", OpenApiTypes.INT, description="only runs of this project"),
    OpenApiParameter("state", OpenApiTypes.STR, enum=TrainingRun.State.values),
])
class RunViewSet(ById, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Training runs: reading and starting them needs the scientist role."""

    read_role = SCIENTIST
    write_role = SCIENTIST
    pagination_class = RunPagination
    filter_backends = []  # the three filters below, read by hand (documented above)

    def get_queryset(self):
        qs = TrainingRun.objects.select_related("task", "created_by")
        if self.action != "list":
            return qs
        qs = qs.main()  # suspects fold models are listed with their suspects run, not here
        params = self.request.query_params
        for name in ("task", "project"):
            if params.get(name, "").isdigit():
                qs = qs.filter(**{f"{name}_id": int(params[name])})
        if params.get("state"):
            qs = qs.filter(state=params["state"])
        return qs

    def get_serializer_class(self):
        return RunListSerializer if self.action == "list" else RunSerializer

    @extend_schema(request=RunCreateSerializer,
                   responses={201: RunSerializer, 400: OpenApiResponse(RunErrorSerializer)})
    def create(self, request):
        """Start a run: snapshot the task's labels and queue the training (gpu queue)."""
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = run_service.start_training_run(task=body.validated_data["task"],
                                             config=body.validated_data["config"], by=request.user)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: RunSerializer, 409: RunErrorSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel: a queued run at once, a running one at its next training step."""
        run = run_service.cancel_run(self.get_object(), by=request.user)
        return Response(RunSerializer(run).data)

    @extend_schema(request=None, responses={201: RunSerializer, 400: RunErrorSerializer, 409: RunErrorSerializer})
    @action(detail=True, methods=["post"])
    def retrain(self, request, pk=None):
        """A new run with this run's config on the current labels (parent = this run)."""
        run = run_service.retrain(self.get_object(), by=request.user)  # 409 for a suspects fold model
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[OpenApiParameter("since", OpenApiTypes.INT,
                                                description="history points already seen")],
                   responses={200: ProgressSerializer})
    @action(detail=True, methods=["get"])
    def progress(self, request, pk=None):
        """What the live progress page polls: state, progress, share done and ETA, the loss
        curve, and the history from ``since`` on."""
        from ..services.quality import run_status

        run = self.get_object()
        since = request.query_params.get("since", "0")
        since = int(since) if since.isdigit() else 0
        status = run_status(run)
        return Response({**status, "history": status["history"][since:], "history_len": len(status["history"]),
                         "attempts": run.attempts})

    @extend_schema(responses={200: ClassMetricSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="class-metrics", pagination_class=None)
    def class_metrics(self, request, pk=None):
        """Per split and label (in the run's label order)."""
        run = self.get_object()
        order = {label_id: i for i, label_id in enumerate(run.label_ids)}
        rows = sorted(ClassMetric.objects.filter(run=run).select_related("label"),
                      key=lambda m: (m.split, order.get(m.label_id, len(order))))
        return Response(ClassMetricSerializer(rows, many=True).data)

    @extend_schema(parameters=[OpenApiParameter("task", OpenApiTypes.INT, required=True)],
                   responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], url_path="default-config", pagination_class=None)
    def default_config(self, request):
        """The config a start-run form shows first for a task."""
        task_id = request.query_params.get("task", "")
        task = get_object_or_404(Task, pk=int(task_id)) if task_id.isdigit() else None
        if task is None:
            return Response({"detail": "pass ?task=<id>"}, status=status.HTTP_400_BAD_REQUEST)
        return Response(run_service.default_config(task))
