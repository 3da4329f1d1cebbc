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
"""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Image, Label, Suspect, SuspectRun, TrainingRun
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


def bad_request(errors) -> dict:
    """The 400 body of the suspects endpoints: one line for a person, the field errors for code."""
    text = "; ".join(f"{k}: {' '.join(map(str, v))}" if isinstance(v, list) else f"{k}: {v}"
                     for k, v in (errors.items() if isinstance(errors, dict) else [("body", errors)]))
    return {"error": "bad_request", "message": text, "errors": errors}


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
        qs = qs.select_related("given_label", "suggested_label", "resolved_by").order_by("-score", "id")
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
        body = ResolveRequestSerializer(data=request.data, context={"suspect": suspect})
        if not body.is_valid():
            return Response(bad_request(body.errors), status=400)
        d = body.validated_data
        try:
            s = svc.resolve(suspect, user=request.user, action=d["action"], label=d.get("label"),
                            expected_version=d.get("expected_version"))
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
        pairs = svc.near_duplicate_pairs(_sr(pk), request.query_params.get("kind") or None)
        return Response([{"image_a": p.image_a_id, "image_b": p.image_b_id, "similarity": p.similarity,
                          "kind": p.kind, "split_a": p.image_a.split, "split_b": p.image_b.split,
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
