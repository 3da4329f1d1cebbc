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
    # Retrain a task automatically after this many human retags since its latest run
    # (None: never). See services.runs.maybe_auto_retrain.
    auto_retrain_after = models.PositiveIntegerField(null=True, blank=True)
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
    # A truth task holds the known-correct labels of another task of the project (a benchmark
    # project: e.g. a dev set imported with its clean labels as a second column). It is hidden
    # from annotators' pages and queues and only serves to measure suspects runs of ``truth_of``
    # (services.suspect_quality). Its label names are those of the task it is the truth of.
    truth_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="truths",
                                 help_text="The task whose labels this task's labels are the truth of (hidden).")

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
    # The import source (folder, archive, manifest or S3 prefix) the image came from, so that a
    # re-import can tell which images are gone from that source (they become status=missing).
    source_uri = models.CharField(max_length=2048, blank=True)
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
        # annotation_changed_idx: what changed since a moment (a suspects run's scoring: its open count).
        indexes = [models.Index(fields=["task", "label", "image"], name="annotation_label_idx"),
                   models.Index(fields=["task", "updated_at"], name="annotation_changed_idx")]


class ImageCount(models.Model):
    """How many images of a project are in each split and status.

    Kept by database triggers (migration 0011) in the statement, hence the transaction, that
    adds, deletes or moves an image, whichever code path wrote it (bulk inserts, ``update()``,
    COPY): a page reads a handful of these rows instead of counting a million images.
    ``services.counts.recount`` rebuilds them from the images.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    split = models.CharField(max_length=5, choices=Split.choices)
    status = models.CharField(max_length=10, choices=ImageStatus.choices)
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "split", "status"], name="imagecount_unique")]


class LabelCount(models.Model):
    """How many images of each split and status carry each label of a task (annotations with
    a label; "no label" is the images' count less these). Kept like :class:`ImageCount`."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="+")
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    split = models.CharField(max_length=5, choices=Split.choices)
    status = models.CharField(max_length=10, choices=ImageStatus.choices)
    n = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "label", "split", "status"], name="labelcount_unique")]


class Unlabelled(models.Model):
    """An image without a label for a task of its project: no annotation, or one whose label
    is empty. Kept by database triggers (migration 0014) in the statement that adds or deletes
    an image or a task or writes an annotation, like :class:`ImageCount`: the grid's "no
    label" filter reads these rows instead of walking the images to find the few without an
    annotation. ``services.counts.recount`` rebuilds them. The rows go with their image or
    task by trigger (DO_NOTHING here: the ORM never collects them)."""

    # (task, image) is the unique index the filter walks; image's own index serves a delete.
    task = models.ForeignKey(Task, on_delete=models.DO_NOTHING, related_name="+", db_index=False)
    image = models.ForeignKey(Image, on_delete=models.DO_NOTHING, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "image"], name="unlabelled_unique")]


class EventSource(models.TextChoices):
    IMPORT = "import", "import"
    ANNOTATOR = "annotator", "annotator"
    MTURK = "mturk", "Mechanical Turk"
    RULE = "rule", "rule"


# The sources that are a person's judgement: they verify a label, count as retags between
# runs and towards automatic retraining.
HUMAN_SOURCES = (EventSource.ANNOTATOR, EventSource.MTURK)


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
            # The events list filtered by source, newest first (the API pages by -id).
            models.Index(fields=["source", "id"], name="event_source_idx"),
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
    # Written with every progress flush: a running job whose heartbeat stopped lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Claims so far (a job taken over after its worker died is claimed again); capped by
    # IMPORT_MAX_ATTEMPTS, and every progress write names its attempt.
    attempts = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    relabelled = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    missing = models.PositiveIntegerField(default=0)
    corrupt = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)
    # Known images whose bytes (or location) changed: re-validated, new thumbnail.
    updated = models.PositiveIntegerField(default=0)
    # Every problem found; ``problems`` keeps only the first ones.
    problems_total = models.PositiveIntegerField(default=0)
    # Rows that could not be taken, each {"row": n, "uri": ..., "reason": ...} (capped).
    problems = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]


# --- Mechanical Turk -------------------------------------------------------------------
# A batch of images sent to Amazon Mechanical Turk (or exported as a CSV for the requester
# web UI), the HITs it became, the assignments workers submitted, their answers per image
# and the consensus per image. The work lives in labeling/services/mturk/.

class MTurkBatch(models.Model):
    class State(models.TextChoices):
        DRAFT = "draft", "draft"
        SENDING = "sending", "sending"
        SENT = "sent", "sent to MTurk"
        EXPORTED = "exported", "exported as CSV"
        APPLIED = "applied", "applied"
        FAILED = "failed", "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="mturk_batches")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="mturk_batches")
    name = models.CharField(max_length=200)
    # How the images were chosen: {"kind": "filter", "params": {...}, "description": "..."}.
    selection = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT)
    # Chosen when the batch is built; sync and apply always talk to the same environment.
    production = models.BooleanField(default=False)
    title = models.CharField(max_length=200)
    description = models.CharField(max_length=1000)
    assignments_per_image = models.PositiveIntegerField(default=3)
    reward = models.DecimalField(max_digits=8, decimal_places=2, help_text="Dollars per assignment.")
    images_per_hit = models.PositiveIntegerField(default=1)
    lifetime_seconds = models.PositiveIntegerField(default=3 * 24 * 3600)
    assignment_duration_seconds = models.PositiveIntegerField(default=600)
    auto_approval_delay_seconds = models.PositiveIntegerField(default=3 * 24 * 3600)
    min_approval_rate = models.PositiveIntegerField(null=True, blank=True, help_text="Percent, 0-100.")
    qualification_type_id = models.CharField(max_length=64, blank=True,
                                             help_text="A custom qualification (test with gold images).")
    qualification_min_score = models.PositiveIntegerField(default=1)
    agreement_threshold = models.FloatField(default=0.6)
    min_seconds_per_image = models.FloatField(default=2.0, help_text="Faster assignments are rejected.")
    reject_failed_gold = models.BooleanField(default=True)
    hit_type_id = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                   blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                   blank=True, related_name="+")
    # What the last apply did: {"changed": n, "unchanged": n, "conflicts": [...], ...}.
    apply_summary = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.name


class MTurkItem(models.Model):
    """One image of a batch, with the label version it was sent with and its consensus."""

    class Status(models.TextChoices):
        PENDING = "pending", "waiting for answers"
        AGREED = "agreed", "consensus"
        INHOUSE = "inhouse", "needs in-house review"
        APPLIED = "applied", "applied"
        UNCHANGED = "unchanged", "confirmed (no change)"
        CONFLICT = "conflict", "changed in-house since"

    batch = models.ForeignKey(MTurkBatch, on_delete=models.CASCADE, related_name="items")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="mturk_items")
    # Gold items have a known answer; they check workers and are never applied.
    is_gold = models.BooleanField(default=False)
    gold_label = models.ForeignKey(Label, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # The annotation version and label when the batch was built (retag's expected_version).
    expected_version = models.PositiveIntegerField(default=0)
    label_at_build = models.ForeignKey(Label, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # The consensus choice: a label id as text, "none" or "cant_tell"; blank when none yet.
    consensus = models.CharField(max_length=20, blank=True)
    consensus_label = models.ForeignKey(Label, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    answers = models.PositiveIntegerField(default=0)
    agreement = models.FloatField(null=True, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["batch_id", "id"]
        constraints = [models.UniqueConstraint(fields=["batch", "image"], name="mturk_item_unique")]
        indexes = [models.Index(fields=["batch", "status"], name="mturk_item_status_idx")]


class MTurkHIT(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "open"
        COMPLETE = "complete", "all assignments in"
        EXPIRED = "expired", "expired"
        GONE = "gone", "no longer on MTurk"

    batch = models.ForeignKey(MTurkBatch, on_delete=models.CASCADE, related_name="hits")
    position = models.PositiveIntegerField()
    # Ids of the MTurkItems shown in this HIT, in order (a gold item can be in many HITs).
    item_ids = models.JSONField(default=list)
    # Sent again with a retried CreateHITWithHITType, so MTurk never creates the HIT twice.
    unique_token = models.CharField(max_length=64, unique=True)
    hit_id = models.CharField(max_length=64, blank=True, db_index=True)
    max_assignments = models.PositiveIntegerField(default=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    expires_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["batch_id", "position"]
        constraints = [models.UniqueConstraint(fields=["batch", "position"], name="mturk_hit_position")]


class MTurkAssignment(models.Model):
    """One worker's submission for one HIT, and what we decided about it."""

    class Decision(models.TextChoices):
        PENDING = "pending", "pending"
        APPROVE = "approve", "approve"
        REJECT = "reject", "reject"

    hit = models.ForeignKey(MTurkHIT, on_delete=models.CASCADE, related_name="assignments")
    assignment_id = models.CharField(max_length=64, unique=True)
    worker_id = models.CharField(max_length=64, db_index=True)
    # MTurk's status: Submitted / Approved / Rejected.
    mturk_status = models.CharField(max_length=20)
    accept_time = models.DateTimeField(null=True, blank=True)
    submit_time = models.DateTimeField(null=True, blank=True)
    work_seconds = models.FloatField(null=True, blank=True)
    decision = models.CharField(max_length=10, choices=Decision.choices, default=Decision.PENDING)
    decision_reason = models.CharField(max_length=500, blank=True)
    # When MTurk was told (or the decision CSV written); None means still to send.
    decision_sent_at = models.DateTimeField(null=True, blank=True)
    decision_error = models.TextField(blank=True)
    raw_answer = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["hit_id", "submit_time", "id"]


class MTurkAnswer(models.Model):
    assignment = models.ForeignKey(MTurkAssignment, on_delete=models.CASCADE, related_name="answers")
    item = models.ForeignKey(MTurkItem, on_delete=models.CASCADE, related_name="mturk_answers")
    worker_id = models.CharField(max_length=64, db_index=True)
    # A label id as text, "none" (none of these) or "cant_tell"; "" when left unanswered.
    choice = models.CharField(max_length=20)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["assignment", "item"], name="mturk_answer_unique")]


class MTurkWorker(models.Model):
    """A worker we have seen; blocked ones get a CreateWorkerBlock and see no more HITs."""

    worker_id = models.CharField(max_length=64, unique=True)
    blocked = models.BooleanField(default=False)
    blocked_at = models.DateTimeField(null=True, blank=True)
    block_reason = models.CharField(max_length=500, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["worker_id"]

    def __str__(self):
        return self.worker_id
# --- end Mechanical Turk ---------------------------------------------------------------


# --- Training runs and quality -----------------------------------------------------------
# A run trains on a label snapshot (the training manifest), then its predictions and
# per-class metrics are loaded here so that the quality views never read storage.

class RunQuerySet(models.QuerySet):
    """Runs by lineage: a suspects run's fold models are TrainingRuns too (so that leases,
    progress and resume apply to them), but they are not training runs of the task."""

    def main(self):
        """The task's own training runs: no fold models (never a baseline, never "the latest")."""
        return self.filter(fold_of__isnull=True)

    def folds(self):
        return self.filter(fold_of__isnull=False)


class TrainingRun(models.Model):
    """One training of a task's model on a frozen label snapshot, and what it found.

    A worker holds a run through a lease (``lease``, ``worker``, ``heartbeat_at``): it is
    taken in one locked update, renewed by heartbeats, and every write the worker makes
    is conditional on it, so a duplicate delivery or a worker presumed dead can never
    write over the run's current holder (services.runs explains the protocol).
    """

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"

    class Trigger(models.TextChoices):
        MANUAL = "manual", "started by hand"
        RETRAIN = "retrain", "retrain of an earlier run"
        AUTO = "auto", "automatic retrain after retags"
        DEMO = "demo", "demo"

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)
    FINAL_STATES = (State.DONE, State.FAILED, State.CANCELLED)

    objects = RunQuerySet.as_manager()

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    # Architecture, weights URI, epochs, batch size, lr, class weighting, freeze backbone...
    config = models.JSONField(default=dict)
    # Lineage: the exact label snapshot, who started it, from which run, with which code.
    manifest_uri = models.CharField(max_length=2048, blank=True)
    manifest_sha256 = models.CharField(max_length=64, blank=True)
    # Label ids in the order of the model's outputs (the task's order at snapshot time),
    # and their names then (the manifest's spelling; a label renamed later keeps its id).
    label_ids = models.JSONField(default=list)
    label_names = models.JSONField(default=list)
    # When the labels were read: retags after this are not in the run.
    snapshot_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    n_train = models.PositiveIntegerField(default=0)
    n_test = models.PositiveIntegerField(default=0)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children",
                               help_text="The run this one retrains (same config, newer labels); for a fold "
                                         "model, the run whose snapshot it folds.")
    # Set on the K fold models of a suspects run: they belong to it and show only there
    # (RunQuerySet.main() leaves them out of run lists, baselines, latest predictions, F1 over runs).
    fold_of = models.ForeignKey("SuspectRun", on_delete=models.CASCADE, null=True, blank=True,
                                related_name="fold_runs", help_text="The suspects run this is a fold model of.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    code_version = models.CharField(max_length=64, blank=True)
    output_uri = models.CharField(max_length=2048, blank=True)
    weights_uri = models.CharField(max_length=2048, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    state_reason = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Live progress: epoch, epochs, step, steps, loss, images_per_s, eta_s, phase.
    progress = models.JSONField(default=dict, blank=True)
    # Loss curve and per-epoch history, for the live chart and the run page.
    history = models.JSONField(default=list, blank=True)
    # Per split: macro/micro precision, recall, F1, accuracy and the confusion matrix.
    metrics = models.JSONField(default=dict, blank=True)
    test_macro_f1 = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=100, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # The current holder's token; empty when no worker holds the run.
    lease = models.CharField(max_length=32, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Seconds spent in each phase: snapshot, train, evaluate, load.
    timings = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["task", "state", "created_at"], name="run_task_state_idx"),
            # The stale-run check: running runs by heartbeat.
            models.Index(fields=["state", "heartbeat_at"], name="run_state_heartbeat_idx"),
        ]

    def __str__(self):
        return f"run {self.id} ({self.task.name})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_fold(self) -> bool:
        return self.fold_of_id is not None


class Prediction(models.Model):
    """What a run's model said about one image."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="predictions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="predictions")
    split = models.CharField(max_length=5, choices=Split.choices)
    # The label the image had in the run's snapshot (not its label now). No database
    # constraint on the two label keys: predictions are derived rows written only by the
    # loader (label indices mapped through run.label_ids), and a million rows load much
    # faster without two million foreign-key checks. Deleting a label still cascades (the
    # ORM does it).
    given_label = models.ForeignKey(Label, on_delete=models.CASCADE, null=True, related_name="+",
                                    db_constraint=False)
    predicted_label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    confidence = models.FloatField()
    correct = models.BooleanField()
    # float16 probabilities in the order of run.label_ids.
    probs = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "image"], name="prediction_unique")]
        indexes = [
            # False negatives of a class: given X, predicted something else, most confident first.
            models.Index(fields=["run", "split", "given_label", "correct", "-confidence", "id"], name="pred_fn_idx"),
            # False positives: predicted X, given something else.
            models.Index(fields=["run", "split", "predicted_label", "correct", "-confidence", "id"],
                         name="pred_fp_idx"),
            # The image grid sorted by confidence (services.browse: keyset on (confidence, image)).
            models.Index(fields=["run", "confidence", "image"], name="pred_sort_idx"),
        ]


class ClassMetric(models.Model):
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="class_metrics")
    split = models.CharField(max_length=5, choices=Split.choices)
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    precision = models.FloatField()
    recall = models.FloatField()
    f1 = models.FloatField()
    support = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "split", "label"], name="class_metric_unique")]
# --- end Training runs ----------------------------------------------------------------------


# --- Suspects ----------------------------------------------------------------------------
# Images whose label is probably wrong, found from a finished training run: out-of-sample
# probabilities (K fold runs for the train split, the run's own predictions for test),
# embedding clusters per class and near-duplicate pairs. The work lives in
# labeling/services/suspects/; annotators work the queue, scientists the clusters.

class SuspectRun(models.Model):
    """One search for suspects from a finished training run (its snapshot, its embeddings)."""

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        FOLDS = "folds", "training folds"
        SCORING = "scoring", "scoring"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    FINAL_STATES = (State.DONE, State.FAILED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="suspect_runs")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="suspect_runs")
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="suspect_runs")
    # k (folds), fold_epochs, method, cluster_threshold, knn, duplicate_threshold.
    config = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    state_reason = models.TextField(blank=True)
    # phase, folds_done, folds; written by the fold tasks and the scoring step.
    progress = models.JSONField(default=dict, blank=True)
    # The K fold models are ordinary (child) TrainingRuns: progress, resume and stale detection apply.
    fold_run_ids = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the suspects were stored (labels read then); seconds per phase.
    scored_at = models.DateTimeField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    output_uri = models.CharField(max_length=2048, blank=True)
    oos_uri = models.CharField(max_length=2048, blank=True, help_text="Out-of-sample probabilities (oos.npz).")
    index_uri = models.CharField(max_length=2048, blank=True, help_text="The similar-images index.")
    # suspects, skipped_verified, skipped_changed, clusters, outliers, near_duplicates.
    counts = models.JSONField(default=dict, blank=True)
    # The cosine cut of each class's clustering, {label id (text): cut}, when mlcore reported one
    # (it may choose the cut from the data); empty: the configured or default cut was used.
    cluster_cuts = models.JSONField(default=dict, blank=True)
    # Per class, written when the run is scored: {label id (text): {"suspects", "clusters", "core",
    # "outliers"}}; what the per-class summary shows (open suspects: services.suspects.open_counts).
    class_figures = models.JSONField(default=dict, blank=True)
    # Every scored image's score and flag (scores.npz: image_id, given label id, score, flagged):
    # what the quality figures against a truth task are computed on (the suspects are only the flagged).
    scores_uri = models.CharField(max_length=2048, blank=True)
    # How near duplicates were found: per method (hash, features) the calibrated threshold and
    # what the calibration measured (services.duplicates), shown on the near-duplicates page.
    duplicate_stats = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "state", "created_at"], name="suspectrun_state_idx")]

    def __str__(self):
        return f"suspects {self.id} of run {self.run_id}"


class Suspect(models.Model):
    """An image whose given label the suspects run doubts, and what a person did about it."""

    class Status(models.TextChoices):
        OPEN = "open", "open"
        RETAGGED = "retagged", "retagged"
        KEPT = "kept", "kept"

    # The statuses of a suspect a person settled (the rest are open).
    SETTLED = (Status.RETAGGED, Status.KEPT)

    # Bit flags of ``reasons`` (mlcore.suspects).
    MODEL = 1
    CLUSTER = 2
    KNN = 4

    suspect_run = models.ForeignKey(SuspectRun, on_delete=models.CASCADE, related_name="suspects")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="suspects")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="+")
    score = models.FloatField()
    suggested_label = models.ForeignKey(Label, on_delete=models.CASCADE, null=True, related_name="+")
    given_label = models.ForeignKey(Label, on_delete=models.CASCADE, null=True, related_name="+")
    # The annotation version when scored: a label changed since makes the suspect stale.
    version = models.PositiveIntegerField(default=0)
    # Whether the image's annotation is still at ``version`` and unconfirmed (what the queue
    # asks): kept by database triggers (migration 0015) on every annotation and suspect write,
    # so a run's open suspects are an indexed count, whatever changed since it was scored.
    current = models.BooleanField(default=False, editable=False)
    self_confidence = models.FloatField(null=True, blank=True)
    knn_agreement = models.FloatField(null=True, blank=True)
    reasons = models.PositiveSmallIntegerField(default=0)
    reason_text = models.CharField(max_length=500, blank=True)
    # Position in the run's ranking: score first, ties broken by the other evidence (lower p(given),
    # lower kNN agreement, more reasons), never by the order of import (which follows label names).
    rank = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    lease_holder = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="+")
    lease_until = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                    related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_label = models.ForeignKey(Label, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    # A skip leaves the suspect open (for someone else, or later): who skipped it last, and when.
    skipped_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    skipped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["suspect_run_id", "-score", "rank", "id"]
        constraints = [models.UniqueConstraint(fields=["suspect_run", "image"], name="suspect_unique")]
        indexes = [models.Index(fields=["suspect_run", "status", "-score", "rank", "id"], name="suspect_rank_idx"),
                   # The image grid sorted by suspect score (services.browse: keyset on (score, image)).
                   models.Index(fields=["suspect_run", "score", "image"], name="suspect_sort_idx"),
                   models.Index(fields=["resolved_by", "resolved_at"], name="suspect_resolved_idx"),
                   models.Index(fields=["suspect_run", "skipped_at"], name="suspect_skipped_idx",
                                condition=models.Q(skipped_at__isnull=False)),
                   # The open suspects no longer current per class (counted, read: few).
                   models.Index(fields=["suspect_run", "given_label", "image"], name="suspect_stale_idx",
                                condition=models.Q(status="open", current=False)),
                   # The settled ones by status, class and reasons (the queue's counts, people's verdicts).
                   models.Index(fields=["suspect_run", "status", "given_label", "reasons"], name="suspect_settled_idx",
                                condition=models.Q(status__in=["retagged", "kept"]))]


class Cluster(models.Model):
    """A cluster of one class's images in embedding space; the largest one is the class's core."""

    suspect_run = models.ForeignKey(SuspectRun, on_delete=models.CASCADE, related_name="clusters")
    label = models.ForeignKey(Label, on_delete=models.CASCADE, related_name="+")
    number = models.IntegerField()
    size = models.PositiveIntegerField(default=0)
    is_core = models.BooleanField(default=False)

    class Meta:
        ordering = ["suspect_run_id", "label_id", "-is_core", "-size", "number"]
        constraints = [models.UniqueConstraint(fields=["suspect_run", "label", "number"], name="cluster_unique")]


class ClusterMember(models.Model):
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="members")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    is_outlier = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "image"], name="cluster_member_unique")]
        # cluster_member_outlier_idx: a class's outliers, a page at a time, without its core members.
        indexes = [models.Index(fields=["image"], name="cluster_member_image_idx"),
                   models.Index(fields=["cluster", "image"], name="cluster_member_outlier_idx",
                                condition=models.Q(is_outlier=True))]


class NearDuplicate(models.Model):
    """Two images that are (nearly) the same picture, found by a perceptual hash of their bytes
    or by a pretrained backbone's features (services.duplicates): across splits (leakage),
    with two labels, or plain copies (same split and label)."""

    class Kind(models.TextChoices):
        CROSS_SPLIT = "cross_split", "across train and test"
        LABEL_CONFLICT = "label_conflict", "different labels"
        DUPLICATE = "duplicate", "same split and label"

    class Method(models.TextChoices):
        HASH = "hash", "perceptual hash"
        FEATURES = "features", "pretrained features"

    suspect_run = models.ForeignKey(SuspectRun, on_delete=models.CASCADE, related_name="near_duplicates")
    image_a = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    image_b = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="+")
    # 1 - Hamming distance / 64 for a hash pair, cosine similarity for a features pair.
    similarity = models.FloatField()
    kind = models.CharField(max_length=20, choices=Kind.choices)
    method = models.CharField(max_length=10, choices=Method.choices, default=Method.HASH)

    class Meta:
        ordering = ["suspect_run_id", "-similarity", "id"]
        indexes = [models.Index(fields=["suspect_run", "kind", "-similarity"], name="neardup_kind_idx")]


class ImageHash(models.Model):
    """Perceptual hashes of an image's bytes (mlcore.duplicates), kept with the checksum they
    were computed from: new bytes (a re-import that changed the file) mean new hashes."""

    image = models.OneToOneField(Image, on_delete=models.CASCADE, primary_key=True, related_name="hash")
    checksum = models.CharField(max_length=64, blank=True)
    # 64-bit hashes stored as signed integers (PostgreSQL bigint).
    phash = models.BigIntegerField()
    dhash = models.BigIntegerField()
    computed_at = models.DateTimeField(auto_now=True)


class TrainingExclusion(models.Model):
    """An image left out of the task's next training manifests (automatic cleaning); reversible
    by setting ``active`` off. Only the train split is affected (services.manifests)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="exclusions")
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="exclusions")
    reason = models.CharField(max_length=200, blank=True)
    suspect_run = models.ForeignKey(SuspectRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # The class the image was left out of (its label when excluded): "put the class back" must
    # find it even after a retag moved it to another label.
    label = models.ForeignKey(Label, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # The automatic cleaning job (and its round) that excluded it, if any.
    cleaning_run = models.ForeignKey("CleaningRun", on_delete=models.SET_NULL, null=True, blank=True,
                                     related_name="exclusions")
    round = models.PositiveIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task_id", "image_id"]
        constraints = [models.UniqueConstraint(fields=["task", "image"], name="exclusion_unique")]
        indexes = [models.Index(fields=["task", "active"], name="exclusion_active_idx")]


class CleaningRun(models.Model):
    """Automatic cleaning rounds on a finished run: cluster each class's train images in the
    last run's embeddings, leave the outliers out (TrainingExclusions, reversible), retrain;
    ``rounds`` times or until no new outlier is found (services.autoclean)."""

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    FINAL_STATES = (State.DONE, State.FAILED)

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="cleaning_runs")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="cleaning_runs")
    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="cleaning_runs",
                            help_text="The finished run round 1 clusters (round 0).")
    # rounds, cluster_threshold (None: mlcore's cut).
    config = models.JSONField(default=dict)
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    state_reason = models.TextField(blank=True)
    # One entry per round: {"round", "run", "excluded", "newly_excluded", "excluded_per_class":
    # {label: n}, "test_macro_f1"}; round 0 is ``run``.
    rounds = models.JSONField(default=list, blank=True)
    stopped = models.CharField(max_length=20, blank=True, help_text="rounds, converged or restored")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"cleaning {self.id} of run {self.run_id}"
# --- end Suspects -------------------------------------------------------------------------
