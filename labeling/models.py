"""The persistent picture of Retag (see DESIGN.md). Models hold data and invariants;
what the app does with them lives in labeling/services/.
"""
from django.conf import settings
from django.db import models


class StorageRoot(models.Model):
    """A place imports may read from, set by an admin: a folder or an S3 bucket/prefix.

    A manifest row or listing that points anywhere else is refused.
    """

    uri = models.CharField(max_length=1024, unique=True, help_text="file:///data/photos/ or s3://bucket/prefix/")
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.uri


class Project(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    # Share of images assigned to the test split when the source gives none.
    test_ratio = models.FloatField(default=0.2)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Task(models.Model):
    """A facet of the images (neckline, sleeve, category...), with its ordered labels."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="task_unique_name")]

    def __str__(self):
        return f"{self.project.name} / {self.name}"


class Label(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=200)
    position = models.PositiveIntegerField(default=0, help_text="Order in which the label is shown everywhere.")

    class Meta:
        ordering = ["task_id", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["task", "name"], name="label_unique_name")]

    def __str__(self):
        return self.name


class Split(models.TextChoices):
    TRAIN = "train", "train"
    TEST = "test", "test"


class ImageStatus(models.TextChoices):
    OK = "ok", "ok"
    CORRUPT = "corrupt", "corrupt"
    MISSING = "missing", "missing from source"


class Image(models.Model):
    """One picture. Its split is fixed for life: a retag never moves it."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="images")
    key = models.CharField(max_length=1024, help_text="Identity within the project: the source-relative key.")
    uri = models.CharField(max_length=2048, help_text="Where the original lives (file:// or s3://).")
    checksum = models.CharField(max_length=64, blank=True, help_text="sha256 of the original bytes.")
    size_bytes = models.BigIntegerField(default=0)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    split = models.CharField(max_length=5, choices=Split.choices)
    status = models.CharField(max_length=10, choices=ImageStatus.choices, default=ImageStatus.OK)
    status_reason = models.TextField(blank=True)
    thumbnail_uri = models.CharField(max_length=2048, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "key"], name="image_unique_key")]
        indexes = [
            models.Index(fields=["project", "status", "split", "id"], name="image_filter_idx"),
        ]

    def __str__(self):
        return self.key

    def save(self, *args, **kwargs):
        if self.pk is not None and "split" in (kwargs.get("update_fields") or ["split"]):
            fixed = Image.objects.filter(pk=self.pk).values_list("split", flat=True).first()
            if fixed is not None and fixed != self.split:
                raise ValueError(f"image {self.pk} is in the {fixed} split for life; it cannot move to {self.split}")
        super().save(*args, **kwargs)


class Annotation(models.Model):
    """The current label of an image for a task. ``version`` grows with every change,
    so that a retag can say which version it saw (optimistic concurrency)."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="annotations")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="annotations")
    label = models.ForeignKey(Label, on_delete=models.PROTECT, null=True, blank=True, related_name="annotations")
    version = models.PositiveIntegerField(default=1)
    verified = models.BooleanField(default=False, help_text="A person confirmed the current label.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "task"], name="annotation_unique")]
        indexes = [models.Index(fields=["task", "label", "image"], name="annotation_label_idx")]


class EventSource(models.TextChoices):
    IMPORT = "import", "import"
    ANNOTATOR = "annotator", "annotator"
    MTURK = "mturk", "Mechanical Turk"
    RULE = "rule", "rule"


class LabelEvent(models.Model):
    """Every change of a label, forever: who, from, to, how and when."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="label_events")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="label_events")
    from_label = models.ForeignKey(Label, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    to_label = models.ForeignKey(Label, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    source = models.CharField(max_length=10, choices=EventSource.choices)
    reference = models.CharField(max_length=200, blank=True, help_text="Import job, MTurk batch or rule that made it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["image", "created_at"], name="event_image_idx"),
            models.Index(fields=["task", "created_at"], name="event_task_idx"),
        ]


class ImportJob(models.Model):
    class Kind(models.TextChoices):
        FOLDER = "folder", "folder (split/label/image)"
        MANIFEST = "manifest", "CSV manifest"
        S3_PREFIX = "s3", "S3 prefix (split/label/image)"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="imports")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    source_uri = models.CharField(max_length=2048)
    options = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    relabelled = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    missing = models.PositiveIntegerField(default=0)
    corrupt = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)
    # Rows that could not be taken, each {"row": n, "uri": ..., "reason": ...} (capped).
    problems = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
