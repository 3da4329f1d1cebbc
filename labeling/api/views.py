"""The API's viewsets: thin. They pick querysets, permissions and serializers; what
changes data goes through labeling/services.

Roles (services.roles) decide everything: annotators and scientists read all but the
storage roots and may retag; admins also create projects, tasks and labels, reorder
labels, start imports and manage storage roots.
"""
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from ..models import Annotation, Image, ImportJob, Label, LabelEvent, Project, StorageRoot, Task
from ..services.roles import ADMIN, ANNOTATOR
from . import filters, serializers
from .pagination import IdCursorPagination, NewestFirstCursorPagination, SmallPagination


# Router ids are whole numbers (bigint): anything else in the path is a 404 from the
# resolver, never a ValueError from the ORM.
ID_REGEX = r"[0-9]{1,18}"


class ById:
    """A viewset whose detail routes take an id (:data:`ID_REGEX`)."""

    lookup_value_regex = ID_REGEX


class ProjectViewSet(ById, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Project.objects.order_by("name", "id")
    serializer_class = serializers.ProjectSerializer
    pagination_class = SmallPagination

    @extend_schema(responses={200: serializers.LabelCountsSerializer})
    @action(detail=True, methods=["get"], url_path="label-counts", pagination_class=None, filter_backends=[])
    def label_counts(self, request, pk=None):
        """The grid sidebar's counts per label for the grid filter in the query string, as the
        grid's own URL has it (task, label, split, status, q; unknown ids are ignored): what the
        grid re-reads after a bulk retag or its undo (static/grid.js)."""
        from ..services import browse

        counts = browse.label_counts(browse.parse_filter(self.get_object(), request.query_params))
        return Response({"total": counts.total, "shown": counts.shown,
                         "rows": [{"label": row.label.id if row.label else None, "count": row.count}
                                  for row in counts.rows]})


class TaskViewSet(ById, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Task.objects.order_by("project_id", "name", "id").prefetch_related(
        Prefetch("labels", queryset=Label.objects.order_by("position", "id")))
    serializer_class = serializers.TaskSerializer
    filterset_class = filters.TaskFilter
    pagination_class = SmallPagination

    @extend_schema(request=serializers.ReorderLabelsSerializer,
                   responses={200: serializers.LabelBriefSerializer(many=True),
                              400: serializers.DetailSerializer})
    @action(detail=True, methods=["post"], url_path="reorder-labels")
    def reorder_labels(self, request, pk=None):
        """Set the order of the task's labels (every label id once)."""
        from ..services.labels import reorder_labels

        task = get_object_or_404(Task, pk=pk)
        body = serializers.ReorderLabelsSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        labels = reorder_labels(task, body.validated_data["label_ids"])
        return Response(serializers.LabelBriefSerializer(labels, many=True).data)


class LabelViewSet(ById, mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Labels in their display order (task, position)."""

    queryset = Label.objects.order_by("task_id", "position", "id")
    serializer_class = serializers.LabelSerializer
    filterset_class = filters.LabelFilter
    pagination_class = SmallPagination


class ImageViewSet(ById, viewsets.ReadOnlyModelViewSet):
    """Images in id order, by cursor, each with its current labels (one query for the
    page, one for the page's annotations: see serializers.ImageListSerializer)."""

    queryset = Image.objects.all()
    serializer_class = serializers.ImageSerializer
    filterset_class = filters.ImageFilter
    pagination_class = IdCursorPagination
    action_roles = {"retag": ANNOTATOR}

    @extend_schema(request=serializers.RetagRequestSerializer,
                   responses={200: serializers.RetagResultSerializer,
                              400: OpenApiResponse(description="Invalid input, or a label of another task."),
                              409: serializers.RetagConflictSerializer})
    @action(detail=True, methods=["post"])
    def retag(self, request, pk=None):
        """Set the image's label for a task. ``expected_version`` is the version you saw;
        if someone changed the label since, nothing is written and 409 says what it is now."""
        from ..services.retag import retag_image

        image = get_object_or_404(Image, pk=pk)
        body = serializers.RetagRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = retag_image(image=image, task=body.validated_data["task"], label=body.validated_data["label"],
                             by=request.user, expected_version=body.validated_data["expected_version"])
        return Response(serializers.RetagResultSerializer(result).data)

    @extend_schema(responses={200: serializers.HISTORY_ROWS})
    @action(detail=True, methods=["get"], pagination_class=None)
    def history(self, request, pk=None):
        """Every label change of the image, newest first, with names: what the image page
        shows (and redraws after a retag)."""
        from ..services.browse import event_row, history

        return Response([event_row(e) for e in history(get_object_or_404(Image, pk=pk))])


class AnnotationViewSet(ById, viewsets.ReadOnlyModelViewSet):
    queryset = Annotation.objects.select_related("updated_by")
    serializer_class = serializers.AnnotationSerializer
    filterset_class = filters.AnnotationFilter
    pagination_class = IdCursorPagination


class LabelEventViewSet(ById, viewsets.ReadOnlyModelViewSet):
    """Every label change, newest first."""

    queryset = LabelEvent.objects.select_related("by")
    serializer_class = serializers.LabelEventSerializer
    filterset_class = filters.LabelEventFilter
    pagination_class = NewestFirstCursorPagination


class ImportJobViewSet(ById, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Imports, newest first, with their progress: admins only, like the import pages
    (jobs name source paths, buckets and the problems found)."""

    read_role = ADMIN
    queryset = ImportJob.objects.select_related("created_by")
    serializer_class = serializers.ImportJobSerializer
    filterset_class = filters.ImportJobFilter
    pagination_class = NewestFirstCursorPagination

    @extend_schema(responses={201: serializers.ImportJobSerializer, 400: serializers.DetailSerializer})
    def create(self, request, *args, **kwargs):
        from ..services.imports import start_import

        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        job = start_import(project=data["project"], kind=data["kind"], source_uri=data["source_uri"],
                           options=data.get("options") or {}, by=request.user)
        return Response(self.get_serializer(job).data, status=status.HTTP_201_CREATED)


class StorageRootViewSet(ById, mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Where imports may read from. Admins only, reading included. A root is added or
    removed, never edited (imports already checked against it)."""

    queryset = StorageRoot.objects.order_by("uri")
    serializer_class = serializers.StorageRootSerializer
    pagination_class = SmallPagination
    read_role = ADMIN
    write_role = ADMIN
