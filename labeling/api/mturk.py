"""Mechanical Turk API (admins only, reading included): batches and workers."""
from __future__ import annotations

from decimal import Decimal

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from ..models import MTurkBatch, MTurkItem, Task
from ..services import mturk
from ..services.enqueue import send
from ..services.mturk import client as mt
from ..services.roles import ADMIN
from .pagination import BatchPagination
from .views import ById
from .serializers import FiniteJSONField, IdField, query


class AdminOnly:
    read_role = ADMIN
    write_role = ADMIN


def _queue(batch: MTurkBatch, states: tuple, task_name: str, fail=None) -> Response:
    """202 when the batch's work is queued; 409 when its state does not allow it; 503 when the
    broker could not take it (``fail`` has recorded why on the batch)."""
    if batch.state not in states:
        return Response({"detail": f"the batch is {batch.state}"}, status=status.HTTP_409_CONFLICT)
    if why := send(task_name, batch.id, fail=fail):
        return Response({"detail": why}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"queued": True}, status=status.HTTP_202_ACCEPTED)


class BatchSerializer(serializers.ModelSerializer):
    cost = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()

    class Meta:
        model = MTurkBatch
        fields = ["id", "name", "project", "task", "selection", "state", "production", "title", "description",
                  "assignments_per_image", "reward", "images_per_hit", "lifetime_seconds",
                  "assignment_duration_seconds", "auto_approval_delay_seconds", "min_approval_rate",
                  "qualification_type_id", "qualification_min_score", "agreement_threshold",
                  "min_seconds_per_image", "reject_failed_gold", "hit_type_id", "error", "created_at", "sent_at",
                  "synced_at", "applied_at", "apply_summary", "cost", "counts"]
        read_only_fields = fields

    def get_cost(self, batch) -> dict:
        c = mturk.batch_cost(batch)
        return {"hits": c.hits, "assignments": c.assignments, "rewards": str(c.rewards), "fees": str(c.fees),
                "total": str(c.total)}

    def get_counts(self, batch) -> dict:
        return {s: batch.items.filter(is_gold=False, status=s).count() for s in MTurkItem.Status.values}


class BuildSerializer(serializers.Serializer):
    task = IdField(queryset=Task.objects.select_related("project"))
    name = serializers.CharField(required=False, allow_blank=True, default="")
    selection = serializers.ChoiceField(choices=sorted(mturk.SELECTORS), default="filter")
    selection_params = FiniteJSONField(required=False, default=dict)
    gold_image_ids = serializers.ListField(child=serializers.IntegerField(), required=False, default=list)
    production = serializers.BooleanField(required=False, default=False)
    assignments_per_image = serializers.IntegerField(required=False, default=3)
    reward = serializers.DecimalField(max_digits=8, decimal_places=2, required=False, default=Decimal("0.05"))
    images_per_hit = serializers.IntegerField(required=False, default=1)
    lifetime_seconds = serializers.IntegerField(required=False, default=3 * 24 * 3600)
    assignment_duration_seconds = serializers.IntegerField(required=False, default=600)
    auto_approval_delay_seconds = serializers.IntegerField(required=False, default=3 * 24 * 3600)
    min_approval_rate = serializers.IntegerField(required=False, allow_null=True, default=95)
    qualification_type_id = serializers.CharField(required=False, allow_blank=True, default="")
    qualification_min_score = serializers.IntegerField(required=False, default=1)
    agreement_threshold = serializers.FloatField(required=False, default=0.6)
    min_seconds_per_image = serializers.FloatField(required=False, default=2.0)
    reject_failed_gold = serializers.BooleanField(required=False, default=True)

    OPTION_FIELDS = ("assignments_per_image", "reward", "images_per_hit", "lifetime_seconds",
                     "assignment_duration_seconds", "auto_approval_delay_seconds", "min_approval_rate",
                     "qualification_type_id", "qualification_min_score", "agreement_threshold",
                     "min_seconds_per_image", "reject_failed_gold")


    def validate_selection_params(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("selection_params is an object")
        return value


class ApplySerializer(serializers.Serializer):
    reviewed = serializers.BooleanField(help_text="true: you reviewed the summary.")


class ResultsSerializer(serializers.Serializer):
    csv = serializers.CharField(required=False, allow_blank=True, default="",
                                help_text="The requester site's results CSV (or upload it as the file ``results``).")
    results = serializers.FileField(required=False)
    final = serializers.BooleanField(required=False, default=False)


class ExportQuery(serializers.Serializer):
    what = serializers.ChoiceField(choices=["csv", "layout", "decisions"], required=False, default="csv")


class BlockSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=1000)


class MTurkBatchViewSet(AdminOnly, ById, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = MTurkBatch.objects.select_related("project", "task")
    serializer_class = BatchSerializer
    pagination_class = BatchPagination

    def get_serializer_class(self):
        return BuildSerializer if self.action == "create" else BatchSerializer

    def create(self, request, *args, **kwargs):
        s = BuildSerializer(data=request.data)
        s.is_valid(raise_exception=True)
        d = s.validated_data
        batch = mturk.build_batch(
            project=d["task"].project, task=d["task"], selection_kind=d["selection"],
            selection_params=d["selection_params"], by=request.user, name=d["name"],
            production=d["production"], gold_image_ids=d["gold_image_ids"],
            options=mturk.BatchOptions(**{k: d[k] for k in BuildSerializer.OPTION_FIELDS}))
        return Response(BatchSerializer(batch).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 502: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def balance(self, request, pk=None):
        batch = self.get_object()
        b = mt.account_balance(mt.make_client(batch.production))  # MTurk's refusal: a 502 (exceptions.py)
        return Response({"available": str(b["available"]), "on_hold": str(b["on_hold"] or "")})

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        batch = self.get_object()
        return _queue(batch, mturk.SENDABLE, "mturk_send_batch", fail=lambda reason: mturk.batches.record_failure(batch, reason))

    @extend_schema(request=None, responses={202: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        return _queue(self.get_object(), mturk.SYNCABLE, "mturk_sync_batch")

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def summary(self, request, pk=None):
        s = mturk.review_summary(self.get_object())
        return Response({
            "counts": s.counts,
            "items": [{"image": r["item"].image_id, "status": r["item"].status, "consensus": r["item"].consensus,
                       "agreement": r["item"].agreement, "answers": dict(r["tally"]), "reason": r["item"].reason}
                      for r in s.items],
            "workers": [{"worker_id": w.worker_id, "answers": w.answers, "agreement": w.agreement,
                         "gold_accuracy": w.gold_accuracy, "approved": w.approved, "rejected": w.rejected}
                        for w in s.workers],
            "changes": [{"from": f, "to": t, "n": n} for f, t, n in s.changes],
        })

    @extend_schema(request=ApplySerializer, responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def apply(self, request, pk=None):
        if not query(ApplySerializer, request.data).get("reviewed"):
            return Response({"detail": "say you reviewed the summary: {\"reviewed\": true}"},
                            status=status.HTTP_400_BAD_REQUEST)
        return Response(mturk.apply_batch(self.get_object(), by=request.user))

    @extend_schema(parameters=[ExportQuery], responses={(200, "text/csv"): OpenApiTypes.STR,
                                                         409: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def export(self, request, pk=None):
        what = query(ExportQuery, request.query_params)["what"]
        batch = self.get_object()
        try:
            if what == "layout":
                return HttpResponse(mturk.layout_html(batch), content_type="text/html")
            if what == "decisions":
                return HttpResponse(mturk.decisions_csv(batch), content_type="text/csv")
            return HttpResponse(mturk.export_csv(batch), content_type="text/csv")
        except mturk.BatchError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)

    @extend_schema(request=ResultsSerializer, responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["post"])
    def results(self, request, pk=None):
        body = query(ResultsSerializer, request.data)
        try:
            text = body["results"].read().decode("utf-8-sig") if body.get("results") else body["csv"]
        except UnicodeDecodeError as exc:
            return Response({"detail": f"the results file is not UTF-8 text: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
        if "\x00" in text:
            return Response({"detail": "the results CSV holds NUL bytes"}, status=status.HTTP_400_BAD_REQUEST)
        return Response(mturk.import_results_csv(self.get_object(), text, final=body["final"]))


WORKER_ID = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The MTurk worker id.")


@extend_schema_view(list=extend_schema(responses={200: OpenApiTypes.OBJECT}),
                    block=extend_schema(request=BlockSerializer, parameters=[WORKER_ID],
                                        responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT,
                                                   502: OpenApiTypes.OBJECT}),
                    unblock=extend_schema(request=None, parameters=[WORKER_ID],
                                          responses={200: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT,
                                                     502: OpenApiTypes.OBJECT}))
class MTurkWorkerViewSet(AdminOnly, viewsets.ViewSet):
    def list(self, request):
        return Response([{"worker_id": w.worker_id, "answers": w.answers, "agreement": w.agreement,
                          "gold_accuracy": w.gold_accuracy, "approved": w.approved, "rejected": w.rejected,
                          "blocked": w.blocked} for w in mturk.workers_overview()])

    @action(detail=True, methods=["post"])
    def block(self, request, pk=None):
        reason = query(BlockSerializer, request.data)["reason"]
        w = mturk.block_worker(pk, reason=reason)  # MTurk refused or unreachable: a 502 (exceptions.py)
        return Response({"worker_id": w.worker_id, "blocked": w.blocked})

    @action(detail=True, methods=["post"])
    def unblock(self, request, pk=None):
        w = mturk.unblock_worker(pk)
        return Response({"worker_id": w.worker_id, "blocked": w.blocked})
