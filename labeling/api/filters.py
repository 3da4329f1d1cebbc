"""Query parameters of the list endpoints (django-filter)."""
import django_filters as filters
from django.db.models import Exists, OuterRef
from rest_framework.exceptions import ValidationError

from ..models import Annotation, EventSource, Image, ImageStatus, ImportJob, Label, LabelEvent, Split, Task
from ..services.browse import search_keys

UNLABELLED = "none"


class ImageFilter(filters.FilterSet):
    """``task`` + ``label`` select by current label (via Annotation); ``label=none``
    with a task selects the images without a label for it. Each filter maps onto an
    index: Image (project, status, split, id), Annotation (task, label, image)."""

    project = filters.NumberFilter(field_name="project_id")
    task = filters.NumberFilter(method="by_annotation", help_text="With label: images whose label for this task is label.")
    label = filters.CharFilter(method="by_annotation", help_text="A label id, or 'none' (needs task) for unlabelled.")
    split = filters.ChoiceFilter(choices=Split.choices)
    status = filters.ChoiceFilter(choices=ImageStatus.choices)
    key = filters.CharFilter(field_name="key", help_text="Exact key.")
    search = filters.CharFilter(method="by_search", help_text="Part of the key (file name or folder), any case.")

    class Meta:
        model = Image
        fields = ["project", "task", "label", "split", "status", "key", "search"]

    def by_search(self, queryset, name, value):
        return search_keys(queryset, value)

    def by_annotation(self, queryset, name, value):
        # task and label are read together, once (on whichever of them comes first).
        if getattr(self, "_annotation_done", False):
            return queryset
        self._annotation_done = True
        task_id = self.form.cleaned_data.get("task")
        raw = (self.form.cleaned_data.get("label") or "").strip()
        if raw == UNLABELLED:
            if task_id is None:
                raise ValidationError({"label": ["label=none needs a task"]})
            labelled = Annotation.objects.filter(image_id=OuterRef("id"), task_id=task_id, label__isnull=False)
            return queryset.filter(~Exists(labelled))
        if raw:
            try:
                label_id = int(raw)
            except ValueError:
                raise ValidationError({"label": ["a label id or 'none'"]})
            if task_id is None:
                task_id = Label.objects.filter(id=label_id).values_list("task_id", flat=True).first()
                if task_id is None:
                    return queryset.none()
            # One filter() call: one join, on the (task, label, image) index.
            return queryset.filter(annotations__task_id=task_id, annotations__label_id=label_id,
                                   **self._cursor_hint())
        if task_id is not None:
            return queryset.filter(annotations__task_id=task_id, **self._cursor_hint())
        return queryset

    def _cursor_hint(self) -> dict:
        """The page's id bound, repeated on the annotation side of the join.

        The cursor adds ``image.id > p`` to the query, but PostgreSQL does not carry an
        inequality across ``image.id = annotation.image_id``: a deep page would walk
        the (task, label, image) index from its start (90,000 entries at 900,000 of a
        million images). Repeating the bound on ``annotation.image_id`` (in the same
        filter() call, so on the same join) starts that walk at the page. It is only a
        hint: non-strict, and the cursor's own condition still decides.
        """
        from .pagination import IdCursorPagination

        request = getattr(self, "request", None)
        if request is None or not request.query_params.get(IdCursorPagination.cursor_query_param):
            return {}
        try:
            cursor = IdCursorPagination().decode_cursor(request)
            position = int(cursor.position) if cursor and cursor.position is not None else None
        except Exception:  # noqa: BLE001 - a bad cursor is the paginator's to refuse (404)
            return {}
        if position is None:
            return {}
        return {"annotations__image_id__lte" if cursor.reverse else "annotations__image_id__gte": position}


class TaskFilter(filters.FilterSet):
    class Meta:
        model = Task
        fields = ["project"]


class LabelFilter(filters.FilterSet):
    project = filters.NumberFilter(field_name="task__project_id")

    class Meta:
        model = Label
        fields = ["task", "project"]


class AnnotationFilter(filters.FilterSet):
    class Meta:
        model = Annotation
        fields = ["image", "task", "label", "verified"]


class LabelEventFilter(filters.FilterSet):
    source = filters.ChoiceFilter(choices=EventSource.choices)
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte",
                                      help_text="Events at or after this time (ISO 8601).")

    class Meta:
        model = LabelEvent
        fields = ["image", "task", "source", "since"]


class ImportJobFilter(filters.FilterSet):
    state = filters.ChoiceFilter(choices=ImportJob.State.choices)

    class Meta:
        model = ImportJob
        fields = ["project", "state", "kind"]
