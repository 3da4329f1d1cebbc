"""What the API reads and writes. Names and labels are user data and leave as data:
the JSON renderer escapes them, nothing here interprets or sanitises them.

Writes that do something (create a project, a task, a label, a retag, an import) go
through labeling/services; the serializers only check the shape of the input.
"""
from django.db import IntegrityError, transaction
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers

from ..models import Annotation, Image, ImportJob, Label, LabelEvent, Project, StorageRoot, Task
from ..services import labels as label_service
from ..services import projects as project_service


# The largest id the database holds (bigint primary keys).
MAX_ID = 2**63 - 1


class IdField(serializers.PrimaryKeyRelatedField):
    """A related object by id, the id checked first as a whole number in the database's
    range: ``1e400``, ``1.5``, ``true``, ``[1]`` or ``"x"`` are a 400 that says so, never a
    crash in the ORM (``int(inf)`` raises OverflowError, which DRF does not catch)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and data.strip().isdigit():
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("incorrect_type", data_type=type(data).__name__)
        if not 1 <= data <= MAX_ID:
            self.fail("does_not_exist", pk_value=data)
        return super().to_internal_value(data)


def query(serializer_class, data) -> dict:
    """``data`` (query parameters, or a body) checked by ``serializer_class``: the valid
    values, or a 400 that names what is wrong (raised, DRF answers it)."""
    s = serializer_class(data=data)
    s.is_valid(raise_exception=True)
    return {k: v for k, v in s.validated_data.items() if v is not None}


def reject_non_finite(value, path="body"):
    """JSON numbers like ``1e400`` parse as infinity, ``NaN`` as NaN: no setting means
    that, and ``int(inf)`` crashes deep in a service. Refuse them where they come in."""
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise serializers.ValidationError(f"{path}: {value!r} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            reject_non_finite(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            reject_non_finite(v, f"{path}[{i}]")
    elif isinstance(value, str) and "\x00" in value:
        raise serializers.ValidationError(f"{path}: NUL characters are not allowed")


class FiniteJSONField(serializers.JSONField):
    """Free-form JSON (a config, selection parameters) without infinities, NaN or NUL bytes."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        reject_non_finite(value, self.field_name or "value")
        return value


class ModelSerializer(serializers.ModelSerializer):
    """The API's model serializers: foreign keys are :class:`IdField` s."""

    serializer_related_field = IdField


class ProjectSerializer(ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "slug", "description", "test_ratio", "auto_retrain_after", "created_at"]
        read_only_fields = ["slug", "created_at"]
        extra_kwargs = {"test_ratio": {"required": False}}

    def validate_test_ratio(self, value):
        if not 0 <= value < 1:
            raise serializers.ValidationError("test_ratio must be in [0, 1)")
        return value

    def create(self, validated_data):
        try:
            with transaction.atomic():  # a savepoint: the clash must not poison the request's transaction
                return project_service.create_project(
                    name=validated_data["name"], description=validated_data.get("description", ""),
                    test_ratio=validated_data.get("test_ratio"))
        except IntegrityError:
            raise serializers.ValidationError({"name": ["a project with this name (or slug) already exists"]})


class LabelBriefSerializer(ModelSerializer):
    class Meta:
        model = Label
        fields = ["id", "name", "position"]


class TaskSerializer(ModelSerializer):
    labels = LabelBriefSerializer(many=True, read_only=True, help_text="In their display order.")
    label_names = serializers.ListField(
        child=serializers.CharField(max_length=200), write_only=True, required=False,
        help_text="Labels to create with the task, in this order.")

    class Meta:
        model = Task
        fields = ["id", "project", "name", "description", "labels", "label_names"]

    def validate_project(self, value):
        if self.instance is not None and value != self.instance.project:
            raise serializers.ValidationError("a task cannot move to another project")
        return value

    def create(self, validated_data):
        task = label_service.get_or_create_task(validated_data["project"], validated_data["name"])
        if validated_data.get("description"):
            task.description = validated_data["description"]
            task.save(update_fields=["description"])
        label_service.ensure_labels(task, validated_data.get("label_names") or [])
        return task

    def update(self, instance, validated_data):
        names = validated_data.pop("label_names", None)
        instance = super().update(instance, validated_data)
        if names:
            label_service.ensure_labels(instance, names)
        return instance


class LabelSerializer(ModelSerializer):
    class Meta:
        model = Label
        fields = ["id", "task", "name", "position"]
        read_only_fields = ["position"]

    def validate_task(self, value):
        if self.instance is not None and value != self.instance.task:
            raise serializers.ValidationError("a label cannot move to another task")
        return value

    def create(self, validated_data):
        name = validated_data["name"]
        return label_service.ensure_labels(validated_data["task"], [name])[name.strip()]


class ReorderLabelsSerializer(serializers.Serializer):
    label_ids = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=MAX_ID), allow_empty=False,
                                      help_text="Every label id of the task, once each, in the new order.")


def attach_current_labels(images) -> None:
    """Give each image ``current_labels``: its annotations as ``[{task, label, version}]``,
    read for all of them in one query (the page's ids only). Cheaper than a
    prefetch_related, which would build an Annotation object per row."""
    by_image = {image.id: [] for image in images}
    rows = (Annotation.objects.filter(image_id__in=list(by_image)).order_by("image_id", "task_id")
            .values_list("image_id", "task_id", "label_id", "version"))
    for image_id, task_id, label_id, version in rows:
        by_image[image_id].append({"task": task_id, "label": label_id, "version": version})
    for image in images:
        image.current_labels = by_image[image.id]


@extend_schema_field({
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"task": {"type": "integer"}, "label": {"type": "integer", "nullable": True},
                       "version": {"type": "integer"}},
        "required": ["task", "label", "version"],
    },
})
class CompactAnnotationsField(serializers.Field):
    """An image's current labels as ``[{task, label, version}]``."""

    def __init__(self, **kwargs):
        kwargs.update(read_only=True, source="*")
        super().__init__(**kwargs)

    def to_representation(self, image):
        if not hasattr(image, "current_labels"):
            attach_current_labels([image])
        return image.current_labels


class ImageListSerializer(serializers.ListSerializer):
    """A page of images: their current labels come in one query for the whole page."""

    def to_representation(self, data):
        images = list(data.all() if hasattr(data, "all") else data)
        attach_current_labels(images)
        return [self.child.to_representation(image) for image in images]


_DATETIME = serializers.DateTimeField()


class ImageSerializer(ModelSerializer):
    """Read-only. ``to_representation`` builds the dict directly: a page of 100 images is
    the API's hottest path, and DRF's field-by-field walk costs more than the queries."""

    annotations = CompactAnnotationsField(help_text="Current label of each task: task id, label id, version.")

    class Meta:
        model = Image
        fields = ["id", "project", "key", "uri", "checksum", "size_bytes", "width", "height", "split",
                  "status", "status_reason", "thumbnail_uri", "created_at", "updated_at", "annotations"]
        read_only_fields = fields
        list_serializer_class = ImageListSerializer

    def to_representation(self, image):
        if not hasattr(image, "current_labels"):
            attach_current_labels([image])
        return {
            "id": image.id, "project": image.project_id, "key": image.key, "uri": image.uri,
            "checksum": image.checksum, "size_bytes": image.size_bytes, "width": image.width,
            "height": image.height, "split": image.split, "status": image.status,
            "status_reason": image.status_reason, "thumbnail_uri": image.thumbnail_uri,
            "created_at": _DATETIME.to_representation(image.created_at),
            "updated_at": _DATETIME.to_representation(image.updated_at),
            "annotations": image.current_labels,
        }


class AnnotationSerializer(ModelSerializer):
    updated_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Annotation
        fields = ["id", "image", "task", "label", "version", "verified", "updated_at", "updated_by"]
        read_only_fields = fields


class LabelEventSerializer(ModelSerializer):
    by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = LabelEvent
        fields = ["id", "image", "task", "from_label", "to_label", "by", "source", "reference", "created_at"]
        read_only_fields = fields


class RetagRequestSerializer(serializers.Serializer):
    task = IdField(queryset=Task.objects.all())
    label = IdField(queryset=Label.objects.all(), allow_null=True,
                                               help_text="null removes the label.")
    expected_version = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, help_text="The annotation version you saw; 0 when the image had no label for the task.")


class RetagResultSerializer(serializers.Serializer):
    annotation = AnnotationSerializer()
    event = LabelEventSerializer(allow_null=True, help_text="null when the label was already the asked one.")


class CurrentAnnotationSerializer(serializers.Serializer):
    label = serializers.IntegerField(allow_null=True)
    label_name = serializers.CharField(allow_null=True)
    version = serializers.IntegerField()
    verified = serializers.BooleanField()
    updated_by = serializers.CharField(allow_null=True)
    updated_at = serializers.DateTimeField(allow_null=True)


# A label event as the image page's history shows it: names, not ids ("from" is a Python
# keyword, hence a serializer built from a dict).
HISTORY_ROWS = inline_serializer("HistoryRow", many=True, fields={
    "id": serializers.IntegerField(),
    "task": serializers.CharField(),
    "from": serializers.CharField(allow_null=True),
    "to": serializers.CharField(allow_null=True),
    "by": serializers.CharField(allow_null=True),
    "source": serializers.CharField(help_text="For people (\"Mechanical Turk\")."),
    "source_key": serializers.CharField(help_text="For code (\"mturk\")."),
    "reference": serializers.CharField(),
    "when": serializers.DateTimeField(),
})


class RetagConflictSerializer(serializers.Serializer):
    """The 409 answer: what the annotation is now, so the client can show it and retry."""

    detail = serializers.CharField()
    current = CurrentAnnotationSerializer()

    @classmethod
    def from_conflict(cls, conflict) -> dict:
        a = conflict.annotation
        current = {
            "label": a.label_id if a else None,
            "label_name": a.label.name if a and a.label_id else None,
            "version": a.version if a else 0,
            "verified": bool(a and a.verified),
            "updated_by": a.updated_by.username if a and a.updated_by_id else None,
            "updated_at": a.updated_at if a else None,
        }
        return cls({"detail": str(conflict), "current": current}).data


# The options each kind of import reads (services/imports: sources.open_source reads ``task``
# for the folder layouts, decoding.worker_threads ``workers`` for all; a manifest names its
# tasks in its columns).
IMPORT_OPTIONS = {ImportJob.Kind.FOLDER: ("task", "workers"), ImportJob.Kind.S3_PREFIX: ("task", "workers"),
                  ImportJob.Kind.MANIFEST: ("workers",)}


class ImportOptionsSerializer(serializers.Serializer):
    """An import's ``options``, checked here against its kind, so that a wrong one is a 400
    naming the option, not a job that fails in the worker."""

    task = serializers.CharField(required=False, allow_blank=True, max_length=Task._meta.get_field("name").max_length,
                                 help_text='folder and s3: the task the label folders name (default "label").')
    workers = serializers.IntegerField(required=False, min_value=1, max_value=64,
                                       help_text="Threads that read and decode (default: 2 per core, at most 8).")

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        kind = (getattr(self.parent, "initial_data", None) or {}).get("kind")
        kind = kind if isinstance(kind, str) else None  # a wrong kind is the kind field's error
        allowed = IMPORT_OPTIONS.get(kind, tuple(self.fields))
        wrong = {name: [f"not an option of a {kind or 'this'} import; its options: {', '.join(allowed)}"]
                 for name in data if name not in allowed}
        if wrong:
            raise serializers.ValidationError(wrong)
        if not value.get("task", "x"):
            del value["task"]  # blank: the default
        return value


class ImportJobSerializer(ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    options = ImportOptionsSerializer(required=False)
    progress = serializers.SerializerMethodField(help_text="processed / total, 0..1; null before the total is known.")
    finished = serializers.SerializerMethodField(help_text="done or failed: a page stops polling.")

    class Meta:
        model = ImportJob
        fields = ["id", "project", "kind", "source_uri", "options", "state", "finished", "created_by", "created_at",
                  "started_at", "finished_at", "total", "processed", "progress", "added", "updated", "relabelled",
                  "unchanged", "missing", "corrupt", "refused", "problems_total", "problems", "message"]
        read_only_fields = [f for f in fields if f not in ("project", "kind", "source_uri", "options")]

    def get_progress(self, job) -> float | None:
        return min(1.0, job.processed / job.total) if job.total else None

    def get_finished(self, job) -> bool:
        return job.state in (ImportJob.State.DONE, ImportJob.State.FAILED)


class StorageRootSerializer(ModelSerializer):
    class Meta:
        model = StorageRoot
        fields = ["id", "uri", "note", "created_at"]
        read_only_fields = ["created_at"]

    def validate_uri(self, value):
        from ..services.storage_roots import SourceRefused, new_root

        if "://" not in value:
            raise serializers.ValidationError("a storage root is a file:/// folder or an s3:// bucket/prefix")
        try:
            new_root(value)
        except SourceRefused as e:
            raise serializers.ValidationError(e.reason)
        return value

    def create(self, validated_data):
        from ..services.storage_roots import add_root

        return add_root(validated_data["uri"], note=validated_data.get("note", ""))


class RunStateSerializer(serializers.Serializer):
    """services.quality.run_state: what every view of a run says of it (the dashboard's
    run objects and the progress poll extend it)."""

    id = serializers.IntegerField()
    state = serializers.CharField()
    state_reason = serializers.CharField()
    device = serializers.CharField()
    test_macro_f1 = serializers.FloatField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_s = serializers.FloatField(allow_null=True)


class LabelCountSerializer(serializers.Serializer):
    label = serializers.IntegerField(allow_null=True, help_text="the label's id; null: the images without a label")
    count = serializers.IntegerField()


class LabelCountsSerializer(serializers.Serializer):
    """The grid sidebar's figures for a grid filter (services.browse.label_counts)."""

    total = serializers.IntegerField(help_text="images of the filter's split and status, whatever their label")
    shown = serializers.IntegerField(help_text="images the filter shows")
    rows = LabelCountSerializer(many=True)


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()
