"""Suspects over the API. Thin: services.suspects does the work.

    GET  /api/suspect-runs/?task=&run=              annotator+
    POST /api/suspect-runs/  {"run": id, "config": {"k": 4, ...}}   scientist+; 201 / 400
    GET  /api/suspect-runs/{id}/                    state, folds, counts, cluster cuts (a read: moves nothing on)
    GET  /api/suspect-runs/{id}/suspects/?status=open&limit=
    POST /api/suspect-runs/{id}/next/               lease the next suspect: 200, or 204 when none is left
    POST /api/suspects/{id}/resolve/  {"action": accept|keep|label|skip, "label": id, "expected_version": n}
                                                    200; 409 when the label changed (or it was resolved)
    GET  /api/suspect-runs/{id}/clusters/?label=&page=   core members and a page of a class's outlier groups
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

from ..models import CleaningRun, Image, Label, NearDuplicate, Suspect, SuspectRun, TrainingRun
from ..services import autoclean
from ..services import suspect_quality
from ..services import suspects as svc
from ..services.roles import ANNOTATOR, SCIENTIST
from .permissions import RolePermission
from .serializers import MAX_ID, DetailSerializer, FiniteJSONField, IdField, RetagConflictSerializer, query


class SuspectRunSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    cluster_cuts = serializers.SerializerMethodField(help_text="Each class's cluster cut (cosine), by label name.")

    class Meta:
        model = SuspectRun
        fields = ["id", "project", "task", "run", "config", "state", "state_reason", "progress", "fold_run_ids",
                  "created_by", "created_at", "started_at", "finished_at", "scored_at", "timings", "counts",
                  "cluster_cuts", "oos_uri", "index_uri"]
        read_only_fields = fields


    def get_cluster_cuts(self, sr) -> dict[str, float]:
        return svc.cuts_by_name(sr, self.context.setdefault("label_names", {}))


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


class ResolveRequestSerializer(serializers.Serializer):
    """What resolving a suspect needs, for the API and the queue page alike: the action, a
    label of the suspect's task (action ``label``), and the annotation version the client
    saw (every action but ``skip``: a retag without it could overwrite a concurrent one).

    ``context["suspect"]`` is the suspect being resolved.
    """

    action = serializers.ChoiceField(choices=svc.ACTIONS)
    label = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)
    expected_version = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=2**31 - 1,
                                                help_text="The annotation version you saw; needed unless skip.")

    def validate_label(self, value):
        if value is None:
            return None
        label = Label.objects.filter(pk=value, task_id=self.context["suspect"].task_id).first()
        if label is None:
            raise serializers.ValidationError("not a label of this suspect's task")
        return label

    def validate(self, data):
        if data["action"] != "skip" and data.get("expected_version") is None:
            raise serializers.ValidationError({"expected_version": ["send the version of the label you saw"]})
        if data["action"] == "label" and data.get("label") is None:
            raise serializers.ValidationError({"label": ["action label needs a label"]})
        return data


class RunFilterQuery(serializers.Serializer):
    """The list filters of suspects runs and cleaning runs: by task, training run or project."""
    task = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    project = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)


class RunWithConfig(serializers.Serializer):
    """A body that starts work on a finished training run: the run and a config object."""
    run = IdField(queryset=TrainingRun.objects.all(), help_text="A finished training run.")
    config = FiniteJSONField(required=False, default=dict)

    def validate_config(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("config is an object of settings")
        return value


class SuspectRunCreateSerializer(RunWithConfig):
    config = FiniteJSONField(required=False, default=dict, help_text="k, fold_epochs, knn, method, ... (defaults filled in)")


class SuspectListQuery(serializers.Serializer):
    status = serializers.ChoiceField(choices=["open", *Suspect.Status.values], required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=5000, default=500)


class LabelQuery(serializers.Serializer):
    label = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=MAX_ID,
                                     help_text="A label of the suspects run's task; none: every class.")


class ClusterQuery(LabelQuery):
    page = serializers.IntegerField(required=False, min_value=1, max_value=10**6,
                                    help_text=f"A page of the class's outliers, {svc.OUTLIERS_PER_PAGE} a page.")


class RetagGroupSerializer(serializers.Serializer):
    label = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    versions = serializers.DictField(child=serializers.IntegerField(min_value=0, max_value=2**31 - 1),
                                     allow_empty=False, help_text="{image id: the annotation version you saw}")

    def validate_versions(self, value):
        out = {}
        for k, v in value.items():
            if not str(k).isdigit() or not 1 <= int(k) <= MAX_ID:
                raise serializers.ValidationError(f"{k!r} is not an image id")
            out[int(k)] = v
        return out


class NearDuplicateQuery(serializers.Serializer):
    kind = serializers.ChoiceField(choices=NearDuplicate.Kind.values, required=False)


class SimilarQuery(serializers.Serializer):
    k = serializers.IntegerField(required=False, min_value=1, max_value=100, default=12)


# --- response shapes (for the schema) ------------------------------------------------------

class SuspectRunDetailSerializer(SuspectRunSerializer):
    status = serializers.DictField(help_text="services.suspects.status: state, folds and their progress, "
                                             "folds_eta_s, counts, finished (what the run page polls)")
    queue = serializers.DictField(child=serializers.IntegerField(), help_text="suspects by status")

    class Meta(SuspectRunSerializer.Meta):
        fields = SuspectRunSerializer.Meta.fields + ["status", "queue"]
        read_only_fields = fields


class RetagGroupResultSerializer(serializers.Serializer):
    changed = serializers.ListField(child=serializers.IntegerField(), help_text="image ids retagged")
    unchanged = serializers.ListField(child=serializers.IntegerField(), help_text="already that label: confirmed")
    conflicts = serializers.ListField(child=serializers.IntegerField(),
                                      help_text="changed since you saw them: not written")


class ExclusionResultSerializer(serializers.Serializer):
    excluded = serializers.IntegerField(required=False, help_text="images excluded by this call (exclude)")
    restored = serializers.IntegerField(required=False, help_text="images back in training (restore)")
    summary = serializers.DictField(help_text="the task's exclusions now, per class")


class NearDuplicatePairSerializer(serializers.Serializer):
    image_a = serializers.IntegerField()
    image_b = serializers.IntegerField()
    similarity = serializers.FloatField()
    kind = serializers.ChoiceField(choices=NearDuplicate.Kind.values)
    method = serializers.CharField()
    split_a = serializers.CharField()
    split_b = serializers.CharField()
    label_a = serializers.IntegerField(allow_null=True)
    label_b = serializers.IntegerField(allow_null=True)


class SimilarItemSerializer(serializers.Serializer):
    image = serializers.IntegerField()
    similarity = serializers.FloatField()
    label = serializers.IntegerField(allow_null=True)
    split = serializers.CharField()


class SimilarSerializer(serializers.Serializer):
    suspect_run = serializers.IntegerField(allow_null=True, help_text="whose embedding: the latest suspects run")
    items = SimilarItemSerializer(many=True)


class Base(APIView):
    permission_classes = [RolePermission]
    read_role = ANNOTATOR
    write_role = ANNOTATOR


def _sr(pk) -> SuspectRun:
    return get_object_or_404(SuspectRun.objects.select_related("run", "task"), pk=pk)


def _label_param(sr: SuspectRun, data) -> int | None:
    """The ``label`` of a query or body (checked by :class:`LabelQuery`), a label of the run's task."""
    value = query(LabelQuery, data).get("label")
    if value is None:
        return None
    return get_object_or_404(Label, pk=value, task_id=sr.task_id).pk


class SuspectRunList(Base):
    write_role = SCIENTIST

    @extend_schema(parameters=[RunFilterQuery], responses={200: SuspectRunSerializer(many=True)})
    def get(self, request):
        qs = SuspectRun.objects.all()
        for name, value in query(RunFilterQuery, request.query_params).items():
            qs = qs.filter(**{f"{name}_id": value})
        return Response(SuspectRunSerializer(qs.order_by("-id")[:200], many=True).data)

    @extend_schema(request=SuspectRunCreateSerializer,
                   responses={201: SuspectRunSerializer, 400: OpenApiResponse(description="Bad run or config.")})
    def post(self, request):
        body = SuspectRunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sr = svc.start_suspect_run(run=body.validated_data["run"], by=request.user,
                                   config=body.validated_data["config"])
        return Response(SuspectRunSerializer(sr).data, status=201)


class SuspectRunDetail(Base):
    @extend_schema(responses={200: SuspectRunDetailSerializer})
    def get(self, request, pk):
        sr = _sr(pk)
        return Response({**SuspectRunSerializer(sr).data, "status": svc.status(sr), "queue": svc.queue_counts(sr)})


class SuspectList(Base):
    @extend_schema(parameters=[SuspectListQuery], responses={200: SuspectSerializer(many=True)})
    def get(self, request, pk):
        sr = _sr(pk)
        q = query(SuspectListQuery, request.query_params)
        wanted = q.get("status", "")
        qs = svc.queue(sr) if wanted == "open" else Suspect.objects.filter(suspect_run=sr)
        if wanted and wanted != "open":
            qs = qs.filter(status=wanted)
        qs = qs.select_related("given_label", "suggested_label", "resolved_by").order_by("-score", "rank", "id")
        return Response(SuspectSerializer(qs[: q["limit"]], many=True).data)


class NextSuspect(Base):
    @extend_schema(request=None, responses={200: SuspectSerializer, 204: OpenApiResponse(description="None left.")})
    def post(self, request, pk):
        s = svc.lease_next(_sr(pk), request.user)
        if s is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(SuspectSerializer(s).data)


class ResolveSuspect(Base):
    @extend_schema(request=ResolveRequestSerializer,
                   responses={200: SuspectSerializer, 400: OpenApiResponse(description="field errors"),
                              409: OpenApiResponse(RetagConflictSerializer, description=(
                                  "The label changed since you saw it (nothing written; ``current`` is the label "
                                  "now), or the suspect was already resolved (``detail`` only)."))})
    def post(self, request, pk):
        suspect = get_object_or_404(Suspect.objects.select_related("image", "task"), pk=pk)
        body = ResolveRequestSerializer(data=request.data, context={"suspect": suspect})
        body.is_valid(raise_exception=True)
        d = body.validated_data
        s = svc.resolve(suspect, user=request.user, action=d["action"], label=d.get("label"),
                        expected_version=d.get("expected_version"))
        return Response(SuspectSerializer(s).data)


class UndoDecision(Base):
    @extend_schema(request=None, responses={200: SuspectSerializer, 400: DetailSerializer,
                                            409: OpenApiResponse(RetagConflictSerializer, description=(
                                                "The label changed after your decision: nothing undone."))})
    def post(self, request, pk):
        """Take back your decision on this suspect: a retag goes back to the label it replaced
        (an event of its own), a keep reopens it; the suspect is open again and leased to you."""
        suspect = get_object_or_404(Suspect, pk=pk)
        return Response(SuspectSerializer(svc.undo_decision(suspect, user=request.user)).data)


class ClusterView(Base):
    @extend_schema(parameters=[ClusterQuery], responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description=(
        "Without ``label``: a list, per class: label, label_name, clusters, core, outliers, suspects. With "
        "``label`` (and ``page``): that class's core_size, core_ids, outliers and groups (cluster, is_core, size, images)."))})
    def get(self, request, pk):
        sr = _sr(pk)
        label_id = _label_param(sr, request.query_params)
        if label_id is None:
            return Response([{"label": r["label"].pk, "label_name": r["label"].name,
                              **{k: r[k] for k in ("clusters", "core", "outliers", "suspects")}}
                             for r in svc.class_summary(sr)])
        view = svc.class_clusters(sr, label_id, page=query(ClusterQuery, request.query_params).get("page") or 1)
        return Response({"label": label_id, "core_size": view["core"].size if view["core"] else 0,
                         "core_ids": view["core_ids"], "outliers": view["outliers"], "page": view["page"],
                         "pages": view["pages"],
                         "groups": [{"cluster": g["cluster"].number, "is_core": g["cluster"].is_core,
                                     "size": g["cluster"].size, "images": g["images"]} for g in view["groups"]]})


class RetagGroup(Base):
    @extend_schema(request=RetagGroupSerializer, responses={200: RetagGroupResultSerializer})
    def post(self, request, pk):
        """Retag images to one label, each with the version you saw; conflicts are listed, not overwritten."""
        sr = _sr(pk)
        body = RetagGroupSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        label = get_object_or_404(Label, pk=body.validated_data["label"], task_id=sr.task_id)
        return Response(svc.retag_group(sr, versions=body.validated_data["versions"], label=label, by=request.user))


class Exclude(Base):
    write_role = SCIENTIST

    @extend_schema(request=LabelQuery, responses={200: ExclusionResultSerializer})
    def post(self, request, pk):
        sr = _sr(pk)
        n = svc.exclude_outliers(sr, label_id=_label_param(sr, request.data), by=request.user)
        return Response({"excluded": n, "summary": svc.exclusion_summary(sr.task)})


class Restore(Base):
    write_role = SCIENTIST

    @extend_schema(request=LabelQuery, responses={200: ExclusionResultSerializer})
    def post(self, request, pk):
        sr = _sr(pk)
        n = svc.restore_exclusions(sr.task, label_id=_label_param(sr, request.data))
        return Response({"restored": n, "summary": svc.exclusion_summary(sr.task)})


class NearDuplicates(Base):
    @extend_schema(parameters=[NearDuplicateQuery], responses={200: NearDuplicatePairSerializer(many=True)})
    def get(self, request, pk):
        from ..services.duplicates import near_duplicate_pairs

        kind = query(NearDuplicateQuery, request.query_params).get("kind")
        pairs = near_duplicate_pairs(_sr(pk), kind or None)
        return Response([{"image_a": p.image_a_id, "image_b": p.image_b_id, "similarity": p.similarity,
                          "kind": p.kind, "method": p.method, "split_a": p.image_a.split, "split_b": p.image_b.split,
                          "label_a": p.label_a, "label_b": p.label_b} for p in pairs])


class SimilarImages(Base):
    @extend_schema(parameters=[SimilarQuery], responses={200: SimilarSerializer})
    def get(self, request, pk):
        from ..services.similar import similar_images

        image = get_object_or_404(Image, pk=pk)
        out = similar_images(image, k=query(SimilarQuery, request.query_params)["k"])
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
    """How good the run's suspects proved (labeling/services/suspect_quality.py has the rules).
    Metrics (the main run's and the folds' macro-F1) are for scientists, as the run dashboard is."""

    read_role = SCIENTIST

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


class CleaningStartRequest(RunWithConfig):
    config = FiniteJSONField(required=False, default=dict, help_text='{"rounds": n, "cluster_threshold": x}')


class CleaningRestoreRequest(serializers.Serializer):
    round = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_ID,
                                     help_text="put back only this round's exclusions (all when absent)")


class CleaningRunList(Base):
    write_role = SCIENTIST

    @extend_schema(parameters=[RunFilterQuery], responses={200: CleaningRunSerializer(many=True)})
    def get(self, request):
        qs = CleaningRun.objects.filter(**{f"{k}_id": v for k, v in query(RunFilterQuery, request.query_params).items()})
        return Response(CleaningRunSerializer(qs.order_by("-id")[:200], many=True).data)

    @extend_schema(request=CleaningStartRequest, responses={201: CleaningRunSerializer,
                                                            400: OpenApiResponse(description="what is wrong")})
    def post(self, request):
        body = query(CleaningStartRequest, request.data)
        job = autoclean.start_cleaning(run=body["run"], by=request.user, config=body.get("config") or {})
        return Response(CleaningRunSerializer(job).data, status=201)


class CleaningRunDetail(Base):
    @extend_schema(responses={200: CleaningRunSerializer})
    def get(self, request, pk):
        job = get_object_or_404(CleaningRun, pk=pk)
        return Response({**CleaningRunSerializer(job).data, "summary": autoclean.summary(job)})


class CleaningRestore(Base):
    write_role = SCIENTIST

    @extend_schema(request=CleaningRestoreRequest, responses={200: ExclusionResultSerializer})
    def post(self, request, pk):
        job = get_object_or_404(CleaningRun, pk=pk)
        n = autoclean.restore_cleaning(job, round=query(CleaningRestoreRequest, request.data).get("round"))
        return Response({"restored": n, "summary": autoclean.summary(job)})
