"""Suspects over the API. Thin: services.suspects does the work.

    GET  /api/suspect-runs/?task=&run=              annotator+
    POST /api/suspect-runs/  {"run": id, "config": {"k": 4, ...}}   scientist+; 201 / 400
    GET  /api/suspect-runs/{id}/                    state, folds, counts (advances a run whose folds finished)
    GET  /api/suspect-runs/{id}/suspects/?status=open&limit=
    POST /api/suspect-runs/{id}/next/               lease the next suspect: 200, or 204 when none is left
    POST /api/suspects/{id}/resolve/  {"action": accept|keep|label|skip, "label": id, "expected_version": n}
                                                    200; 409 when the label changed (or it was resolved)
    GET  /api/suspect-runs/{id}/clusters/?label=    core members and outlier groups of a class
    POST /api/suspect-runs/{id}/retag-group/  {"label": id, "versions": {image_id: version}}   annotator+
    POST /api/suspect-runs/{id}/exclude/  {"label": id?}     scientist+: outliers out of the next trainings
    POST /api/suspect-runs/{id}/restore/  {"label": id?}     scientist+: back in
    GET  /api/suspect-runs/{id}/near-duplicates/?kind=cross_split|label_conflict
    GET  /api/images/{id}/similar/?k=12
    GET  /api/suspect-runs/{id}/quality/            people's verdicts per signal and class (Wilson intervals),
                                                    figures against the truth task, fold models' health
    POST /api/cleaning-runs/  {"run": id, "config": {"rounds": 3}}   scientist+; 201 / 400
    GET  /api/cleaning-runs/{id}/                   rounds: run, exclusions per class, test macro-F1
    POST /api/cleaning-runs/{id}/restore/  {"round": r?}   scientist+: its exclusions back into training
"""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import CleaningRun, Image, Label, Suspect, SuspectRun, TrainingRun
from ..services import autoclean
from ..services import suspect_quality
from ..services import suspects as svc
from ..services.retag import RetagConflict, current_version
from ..services.roles import ANNOTATOR, SCIENTIST
from .permissions import RolePermission


class SuspectRunSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = SuspectRun
        fields = ["id", "project", "task", "run", "config", "state", "state_reason", "progress", "fold_run_ids",
                  "created_by", "created_at", "started_at", "finished_at", "scored_at", "timings", "counts",
                  "oos_uri", "index_uri"]
        read_only_fields = fields


class SuspectSerializer(serializers.ModelSerializer):
    given_label_name = serializers.CharField(source="given_label.name", read_only=True, default=None)
    suggested_label_name = serializers.CharField(source="suggested_label.name", read_only=True, default=None)
    resolved_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Suspect
        fields = ["id", "suspect_run", "image", "task", "score", "given_label", "given_label_name",
                  "suggested_label", "suggested_label_name", "version", "self_confidence", "knn_agreement",
                  "reasons", "reason_text", "status", "lease_until", "resolved_by", "resolved_at",
                  "resolved_label"]
        read_only_fields = fields


class Base(APIView):
    permission_classes = [RolePermission]
    read_role = ANNOTATOR
    write_role = ANNOTATOR


def _sr(pk) -> SuspectRun:
    return get_object_or_404(SuspectRun.objects.select_related("run", "task"), pk=pk)


def _label_param(sr: SuspectRun, value) -> int | None:
    if value in (None, ""):
        return None
    return get_object_or_404(Label, pk=int(value), task_id=sr.task_id).pk


class SuspectRunList(Base):
    write_role = SCIENTIST

    def get(self, request):
        qs = SuspectRun.objects.all()
        for name in ("task", "run", "project"):
            v = request.query_params.get(name, "")
            if v.isdigit():
                qs = qs.filter(**{f"{name}_id": int(v)})
        return Response(SuspectRunSerializer(qs.order_by("-id")[:200], many=True).data)

    def post(self, request):
        run_id = request.data.get("run")
        run = get_object_or_404(TrainingRun, pk=int(run_id)) if str(run_id or "").isdigit() else None
        if run is None:
            return Response({"detail": "send run (a training run id)"}, status=400)
        try:
            sr = svc.start_suspect_run(run=run, by=request.user, config=request.data.get("config") or {})
        except svc.SuspectError as e:
            return Response({"detail": str(e)}, status=400)
        return Response(SuspectRunSerializer(sr).data, status=201)


class SuspectRunDetail(Base):
    def get(self, request, pk):
        sr = _sr(pk)
        return Response({**SuspectRunSerializer(sr).data, "status": svc.status(sr), "queue": svc.queue_counts(sr)})


class SuspectList(Base):
    def get(self, request, pk):
        sr = _sr(pk)
        wanted = request.query_params.get("status", "")
        qs = svc.queue(sr) if wanted == "open" else Suspect.objects.filter(suspect_run=sr)
        if wanted and wanted != "open":
            qs = qs.filter(status=wanted)
        limit = request.query_params.get("limit", "500")
        qs = qs.select_related("given_label", "suggested_label", "resolved_by").order_by("-score", "rank", "id")
        return Response(SuspectSerializer(qs[: int(limit) if limit.isdigit() else 500], many=True).data)


class NextSuspect(Base):
    def post(self, request, pk):
        s = svc.lease_next(_sr(pk), request.user)
        if s is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(SuspectSerializer(s).data)


def conflict(suspect: Suspect, message: str) -> Response:
    label = suspect.image.annotations.filter(task_id=suspect.task_id).select_related("label").first()
    return Response({"error": "conflict", "message": message, "version": current_version(suspect.image, suspect.task),
                     "label": label.label_id if label else None,
                     "label_name": label.label.name if label and label.label_id else None}, status=409)


class ResolveSuspect(Base):
    def post(self, request, pk):
        suspect = get_object_or_404(Suspect.objects.select_related("image", "task"), pk=pk)
        action = request.data.get("action")
        label = None
        if request.data.get("label") not in (None, ""):
            label = Label.objects.filter(pk=int(request.data["label"]), task_id=suspect.task_id).first()
            if label is None:
                return Response({"error": "bad_request", "message": "label is not a label of this task"}, status=400)
        expected = request.data.get("expected_version")
        try:
            expected = None if action == "skip" and expected is None else int(expected)
        except (TypeError, ValueError):
            return Response({"error": "bad_request", "message": "send expected_version"}, status=400)
        try:
            s = svc.resolve(suspect, user=request.user, action=action, label=label, expected_version=expected)
        except RetagConflict:
            return conflict(suspect, "Someone else changed this label since you saw it. Nothing was overwritten.")
        except svc.SuspectResolved as e:
            return conflict(suspect, str(e))
        except ValueError as e:
            return Response({"error": "bad_request", "message": str(e)}, status=400)
        return Response(SuspectSerializer(s).data)


class ClusterView(Base):
    def get(self, request, pk):
        sr = _sr(pk)
        label_id = _label_param(sr, request.query_params.get("label"))
        if label_id is None:
            return Response([{"label": r["label"].pk, "label_name": r["label"].name,
                              **{k: r[k] for k in ("clusters", "core", "outliers", "suspects")}}
                             for r in svc.class_summary(sr)])
        view = svc.class_clusters(sr, label_id)
        return Response({"label": label_id, "core_size": view["core"].size if view["core"] else 0,
                         "core_ids": view["core_ids"], "outliers": view["outliers"],
                         "groups": [{"cluster": g["cluster"].number, "is_core": g["cluster"].is_core,
                                     "size": g["cluster"].size, "images": g["images"]} for g in view["groups"]]})


class RetagGroup(Base):
    def post(self, request, pk):
        sr = _sr(pk)
        label = get_object_or_404(Label, pk=int(request.data.get("label") or 0), task_id=sr.task_id)
        try:
            versions = {int(k): int(v) for k, v in (request.data.get("versions") or {}).items()}
        except (TypeError, ValueError, AttributeError):
            return Response({"error": "bad_request", "message": "versions: {image_id: version}"}, status=400)
        return Response(svc.retag_group(sr, versions=versions, label=label, by=request.user))


class Exclude(Base):
    write_role = SCIENTIST

    def post(self, request, pk):
        sr = _sr(pk)
        n = svc.exclude_outliers(sr, label_id=_label_param(sr, request.data.get("label")), by=request.user)
        return Response({"excluded": n, "summary": svc.exclusion_summary(sr.task)})


class Restore(Base):
    write_role = SCIENTIST

    def post(self, request, pk):
        sr = _sr(pk)
        n = svc.restore_exclusions(sr.task, label_id=_label_param(sr, request.data.get("label")))
        return Response({"restored": n, "summary": svc.exclusion_summary(sr.task)})


class NearDuplicates(Base):
    def get(self, request, pk):
        from ..services.duplicates import near_duplicate_pairs

        pairs = near_duplicate_pairs(_sr(pk), request.query_params.get("kind") or None)
        return Response([{"image_a": p.image_a_id, "image_b": p.image_b_id, "similarity": p.similarity,
                          "kind": p.kind, "method": p.method, "split_a": p.image_a.split, "split_b": p.image_b.split,
                          "label_a": p.label_a, "label_b": p.label_b} for p in pairs])


class SimilarImages(Base):
    def get(self, request, pk):
        from ..services.similar import similar_images

        image = get_object_or_404(Image, pk=pk)
        k = request.query_params.get("k", "12")
        out = similar_images(image, k=min(int(k), 100) if k.isdigit() else 12)
        return Response({"suspect_run": out["run"].pk if out["run"] else None,
                         "items": [{"image": it["image"].pk, "similarity": it["similarity"], "label": it["label"],
                                    "split": it["image"].split} for it in out["items"]]})


class ShareSerializer(serializers.Serializer):
    n = serializers.IntegerField(help_text="reviewed suspects")
    changed = serializers.IntegerField()
    kept = serializers.IntegerField()
    share = serializers.FloatField(allow_null=True, help_text="changed / n: the precision as reviewed")
    low = serializers.FloatField(allow_null=True, help_text="95% Wilson interval, lower end")
    high = serializers.FloatField(allow_null=True, help_text="95% Wilson interval, upper end")


class SignalShareSerializer(ShareSerializer):
    signal = serializers.ChoiceField(choices=[name for _, name in suspect_quality.SIGNALS])


class ClassShareSerializer(ShareSerializer):
    label = serializers.IntegerField()
    label_name = serializers.CharField(allow_null=True)


class HumanQualitySerializer(serializers.Serializer):
    suspects = serializers.IntegerField()
    reviewed = serializers.IntegerField()
    overall = ShareSerializer()
    by_signal = SignalShareSerializer(many=True)
    by_class = ClassShareSerializer(many=True)


class TruthQualitySerializer(serializers.Serializer):
    truth_task = serializers.CharField()
    truth_task_id = serializers.IntegerField()
    images = serializers.IntegerField(help_text="scored images with a truth label")
    errors = serializers.IntegerField(required=False, help_text="of them mislabelled (given != truth)")
    flagged = serializers.IntegerField(required=False)
    true_positives = serializers.IntegerField(required=False)
    precision = serializers.FloatField(required=False, allow_null=True)
    recall = serializers.FloatField(required=False, allow_null=True)
    f1 = serializers.FloatField(required=False, allow_null=True)
    k = serializers.IntegerField(required=False, help_text="= errors")
    precision_at_k = serializers.FloatField(required=False, allow_null=True)
    auroc = serializers.FloatField(required=False, allow_null=True)


class FoldHealthSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    macro_f1 = serializers.FloatField(allow_null=True, help_text="on the fold's held-out images")
    collapsed = serializers.BooleanField(help_text="predicted a single class")
    weak = serializers.BooleanField()
    why = serializers.CharField()
    epochs = serializers.IntegerField(allow_null=True)
    progress = serializers.DictField()


class EvidenceSerializer(serializers.Serializer):
    main_macro_f1 = serializers.FloatField(allow_null=True)
    chance = serializers.FloatField()
    weak_ratio = serializers.FloatField()
    folds = FoldHealthSerializer(many=True)
    weak = serializers.BooleanField()
    warning = serializers.CharField()


class QualitySerializer(serializers.Serializer):
    suspect_run = serializers.IntegerField()
    human = HumanQualitySerializer(allow_null=True)
    truth = TruthQualitySerializer(allow_null=True, help_text="null without a truth task")
    evidence = EvidenceSerializer()


class SuspectRunQuality(Base):
    """How good the run's suspects proved (labeling/services/suspect_quality.py has the rules)."""

    @extend_schema(responses={200: QualitySerializer})
    def get(self, request, pk):
        return Response(suspect_quality.quality(_sr(pk)))


class CleaningRunSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = CleaningRun
        fields = ["id", "project", "task", "run", "config", "state", "state_reason", "stopped", "rounds",
                  "created_by", "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class CleaningRunList(Base):
    write_role = SCIENTIST

    @extend_schema(responses={200: CleaningRunSerializer(many=True)})
    def get(self, request):
        qs = CleaningRun.objects.all()
        for name in ("task", "run", "project"):
            v = request.query_params.get(name, "")
            if v.isdigit():
                qs = qs.filter(**{f"{name}_id": int(v)})
        return Response(CleaningRunSerializer(qs.order_by("-id")[:200], many=True).data)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: CleaningRunSerializer,
                                                           400: OpenApiResponse(description="what is wrong")})
    def post(self, request):
        run_id = request.data.get("run")
        if not str(run_id or "").isdigit():
            return Response({"detail": "send run (a training run id)"}, status=400)
        run = get_object_or_404(TrainingRun, pk=int(run_id))
        config = request.data.get("config") or {}
        if not isinstance(config, dict):
            return Response({"detail": "config is an object: {\"rounds\": n, \"cluster_threshold\": x}"}, status=400)
        try:
            job = autoclean.start_cleaning(run=run, by=request.user, config=config)
        except autoclean.CleaningError as e:
            return Response({"detail": str(e)}, status=400)
        return Response(CleaningRunSerializer(job).data, status=201)


class CleaningRunDetail(Base):
    @extend_schema(responses={200: CleaningRunSerializer})
    def get(self, request, pk):
        job = get_object_or_404(CleaningRun, pk=pk)
        return Response({**CleaningRunSerializer(job).data, "summary": autoclean.summary(job)})


class CleaningRestore(Base):
    write_role = SCIENTIST

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, pk):
        job = get_object_or_404(CleaningRun, pk=pk)
        r = request.data.get("round")
        if r not in (None, "") and not str(r).isdigit():
            return Response({"detail": "round is a round number"}, status=400)
        n = autoclean.restore_cleaning(job, round=None if r in (None, "") else int(r))
        return Response({"restored": n, "summary": autoclean.summary(job)})
