"""The embeddings map of a run (scientists and admins) and bulk retag (annotators and up):
the map's selection, or any grid's, retagged in one request, and the undo of a retag."""
from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from ..models import Label, Task, TrainingRun
from ..services import embedding_map
from ..services.retag import MAX_BULK, RetagError, retag_many, undo_retags
from ..services.roles import ANNOTATOR, SCIENTIST
from .permissions import RolePermission
from .serializers import DetailSerializer, IdField, MAX_ID


class MapLabelSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()


def _column(child, help_text):
    return serializers.ListField(child=child, help_text=help_text)


class RunMapSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    task = serializers.IntegerField()
    method = serializers.CharField(help_text="How the 2-D layout was made (pca).")
    sampled = serializers.BooleanField(help_text="True when the run has more images than the map shows.")
    labels = MapLabelSerializer(many=True, help_text="The task's labels; the columns below index into this list.")
    suspect_run = serializers.IntegerField(allow_null=True, help_text="The suspects run the scores come from.")
    image = _column(serializers.IntegerField(), "Image id of each point.")
    x = _column(serializers.FloatField(), "Layout, in [-1, 1].")
    y = _column(serializers.FloatField(), "Layout, in [-1, 1].")
    given = _column(serializers.IntegerField(), "Label in the run's snapshot (index into labels, -1: none).")
    predicted = _column(serializers.IntegerField(), "The run's prediction (index, -1: none).")
    confidence = _column(serializers.FloatField(allow_null=True), "The prediction's probability.")
    suspect = _column(serializers.FloatField(allow_null=True), "Suspect score, null when not a suspect.")
    current = _column(serializers.IntegerField(), "Label now (index, -1: none).")
    version = _column(serializers.IntegerField(), "Version of the current label: what a retag sends.")


class RunMapView(APIView):
    permission_classes = [RolePermission]
    read_role = SCIENTIST

    @extend_schema(responses={200: RunMapSerializer, 409: DetailSerializer})
    def get(self, request, run_id):
        """Every image of the run (a seeded sample above 100,000) as a point of a 2-D map of
        its embeddings, with given, predicted and current label, confidence, suspect score
        and the label version to send with a retag. The layout is made on the first request."""
        run = get_object_or_404(TrainingRun, id=run_id)
        try:
            return Response(embedding_map.run_map(run))
        except embedding_map.MapUnavailable as e:
            return Response({"detail": str(e)}, status=409)


class _ImageItemSerializer(serializers.Serializer):
    image = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class _TaskRequestSerializer(serializers.Serializer):
    task = IdField(queryset=Task.objects.all())


class BulkItemSerializer(_ImageItemSerializer):
    expected_version = serializers.IntegerField(min_value=0, max_value=2**31 - 1,
                                                help_text="The label version you saw (0: no label yet).")


class BulkRetagRequestSerializer(_TaskRequestSerializer):
    label = IdField(queryset=Label.objects.all(), allow_null=True, help_text="null removes the label.")
    items = BulkItemSerializer(many=True, allow_empty=False, max_length=MAX_BULK)


class BulkDoneSerializer(serializers.Serializer):
    image = serializers.IntegerField()
    version = serializers.IntegerField(help_text="The label's version now (what an undo sends).")
    label = serializers.IntegerField(allow_null=True, help_text="The label now.")


class BulkConflictSerializer(serializers.Serializer):
    image = serializers.IntegerField()
    seen = serializers.IntegerField(help_text="The version you sent.")
    version = serializers.IntegerField(help_text="The version now.")
    label = serializers.IntegerField(allow_null=True, help_text="The label now.")


class BulkRetagResultSerializer(serializers.Serializer):
    changed = BulkDoneSerializer(many=True, help_text="Retagged, one event each.")
    unchanged = BulkDoneSerializer(many=True, help_text="Already had the label (marked verified).")
    conflicts = BulkConflictSerializer(many=True, help_text="Changed by someone since you saw them: not written.")
    missing = serializers.ListField(child=serializers.IntegerField(), help_text="Not images of the task's project.")


class BulkRetagView(APIView):
    permission_classes = [RolePermission]
    write_role = ANNOTATOR

    @extend_schema(request=BulkRetagRequestSerializer, responses={200: BulkRetagResultSerializer,
                                                                 400: DetailSerializer})
    def post(self, request):
        """Retag up to 1,000 images to one label, each with the version you saw: one event per
        image; an image someone changed since is reported in ``conflicts`` and left as it is,
        the others go through."""
        body = BulkRetagRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            result = retag_many(task=data["task"], label=data["label"], by=request.user,
                                items=[(i["image"], i["expected_version"]) for i in data["items"]])
        except RetagError as e:
            return Response({"detail": str(e)}, status=400)
        return Response(BulkRetagResultSerializer(result).data)


class UndoItemSerializer(_ImageItemSerializer):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1,
                                       help_text="The version the retag to take back returned.")


class UndoRequestSerializer(_TaskRequestSerializer):
    items = UndoItemSerializer(many=True, allow_empty=False, max_length=MAX_BULK)


class UndoRetagView(APIView):
    permission_classes = [RolePermission]
    write_role = ANNOTATOR

    @extend_schema(request=UndoRequestSerializer, responses={200: BulkRetagResultSerializer,
                                                            400: DetailSerializer})
    def post(self, request):
        """Take back retags (one, or a bulk retag's): each image goes back to the label it had
        before the retag that returned ``version``, as an event of its own (reference
        ``undo``); an image someone changed since is reported in ``conflicts`` and left as it is."""
        body = UndoRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            result = undo_retags(task=data["task"], by=request.user,
                                 items=[(i["image"], i["version"]) for i in data["items"]])
        except RetagError as e:
            return Response({"detail": str(e)}, status=400)
        return Response(BulkRetagResultSerializer(result).data)
