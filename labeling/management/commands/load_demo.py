"""``manage.py load_demo``: the demo that ``make run`` serves.

Unpacks the archives shipped in ``demo/`` into ``<VAR_DIR>/demo/``, registers that
folder as a storage root, creates the projects "Clothing" (tasks category and
audience) and "Fashion-MNIST" (task category), imports their manifests
synchronously, and creates the users admin, scientist and annotator. Then it starts one
training run on Fashion-MNIST's category task if that task has none yet (``--no-train``
to skip): the worker that ``make run`` starts trains it, so a newcomer sees a live run
and then a finished dashboard.

It is idempotent: an archive already unpacked (same SHA-256) is not unpacked again,
existing projects, tasks, labels and users are left as they are (a label order or a
password changed in the app stays), and a manifest already imported is not imported
again, so retags made in the app survive the next ``make run``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from mlcore import storage

from ...models import ImportJob, Project
from ...services.labels import ensure_labels, get_or_create_task
from ...services.projects import create_project
from ...services.roles import ADMIN, ANNOTATOR, ROLES, SCIENTIST, set_role

DEMO_SOURCE = settings.BASE_DIR / "demo"
DEFAULT_PASSWORD = "retag-demo"
USERS = (("admin", ADMIN), ("scientist", SCIENTIST), ("annotator", ANNOTATOR))


@dataclass(frozen=True)
class DemoProject:
    name: str
    archive: str       # file in demo/
    folder: str        # top folder inside the archive
    description: str
    # task -> labels in the order the app shows them; labels a manifest has beyond
    # these are appended by the import.
    tasks: dict = field(default_factory=dict)
    # (task, config) of the training run started when the task has none yet.
    train: tuple | None = None


PROJECTS = (
    DemoProject(
        name="Clothing",
        archive="clothing.zip",
        folder="clothing",
        description="About 500 CC0 photos of real clothes (the Clothing dataset by Alexey Grigorev "
                    "and contributors), two facets: category and audience. 26 of them carry a label "
                    "that the dataset's published subset corrects: real label noise to find.",
        tasks={
            # Top to bottom of an outfit, then the rest.
            "category": ["T-Shirt", "Polo", "Shirt", "Longsleeve", "Hoodie", "Blazer", "Outwear",
                         "Dress", "Body", "Skirt", "Shorts", "Pants", "Shoes", "Hat"],
            "audience": ["adult", "kids"],
        },
    ),
    DemoProject(
        name="Fashion-MNIST",
        archive="fashion-mnist.zip",
        folder="fashion-mnist",
        description="4,000 Fashion-MNIST thumbnails by Zalando Research (MIT): 3,000 train and "
                    "1,000 test, 28x28 grey, ten classes in the canonical order.",
        tasks={
            "category": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        },
        # A few minutes on a laptop CPU: 28 px images, mlcore's small-input stem.
        train=("category", {"arch": "resnet18", "small_input": True, "image_size": 28, "epochs": 3,
                            "batch_size": 64, "lr": 0.05}),
    ),
)


def demo_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Command(BaseCommand):
    help = "Unpack and import the demo projects, and create the demo users (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=None, metavar="N",
                            help="import at most N images per project (fast tests)")
        parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
        parser.add_argument("--no-train", action="store_true",
                            help="do not start the demo training run on Fashion-MNIST")

    def handle(self, *args, limit=None, quiet=False, no_train=False, **options):
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        self.quiet = quiet or options.get("verbosity", 1) == 0
        root = demo_dir()
        root.mkdir(parents=True, exist_ok=True)

        users = self.ensure_users()
        self.ensure_storage_root(root)
        for demo in PROJECTS:
            folder = self.unpack(demo, root)
            project = self.ensure_project(demo)
            self.ensure_imported(project, folder, limit=limit, by=users["admin"])
            if demo.train and not no_train:
                self.ensure_demo_run(project, demo.train, by=users["scientist"])

    # --- steps --------------------------------------------------------------------

    def say(self, message: str) -> None:
        if not self.quiet:
            self.stdout.write(message)

    def ensure_users(self) -> dict:
        password = os.environ.get("RETAG_DEMO_PASSWORD") or DEFAULT_PASSWORD
        User = get_user_model()
        users = {}
        for username, role in USERS:
            with transaction.atomic():
                user, created = User.objects.get_or_create(username=username)
                if created:
                    user.set_password(password)
                    user.is_superuser = role == ADMIN  # the Django admin at /django-admin/ too
                    user.save()
                roles = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
                if roles != {role}:  # the group, even for the superuser admin
                    set_role(user, role)
                    self.say(f"user {username}: role {role}" + (" (new)" if created else ""))
                else:
                    self.say(f"user {username}: exists ({role})")
            users[username] = user
        return users

    def ensure_storage_root(self, root: Path) -> None:
        """Imports read only from allowed roots: the demo folder becomes one."""
        from ...services import storage_roots

        uri = storage.to_uri(root)
        try:
            storage_roots.check_allowed(uri)
            self.say(f"storage root {uri}: already allowed")
        except storage_roots.SourceRefused:
            storage_roots.add_root(uri, note="Demo data, unpacked by manage.py load_demo")
            self.say(f"storage root {uri}: registered")

    def unpack(self, demo: DemoProject, root: Path) -> Path:
        """``demo/<archive>`` -> ``<root>/<folder>``, unless that exact archive is there."""
        from ...services.imports import safe_extract

        archive = DEMO_SOURCE / demo.archive
        if not archive.is_file():
            raise CommandError(f"{archive} is missing (rebuild it with scripts/build_demo.py)")
        target = root / demo.folder
        stamp = root / f".{demo.folder}.sha256"
        digest = sha256_of(archive)
        if target.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
            self.say(f"{demo.archive}: already unpacked in {target}")
            return target
        # Unpack beside the target, then swap it in: an interrupted run leaves no half folder.
        with tempfile.TemporaryDirectory(dir=root, prefix=f".unpack-{demo.folder}-") as tmp:
            _, refused = safe_extract(archive, Path(tmp))
            if refused:
                raise CommandError(f"{archive}: refused members: {refused[:3]}")
            unpacked = Path(tmp) / demo.folder
            if not unpacked.is_dir():
                raise CommandError(f"{archive} has no top folder {demo.folder}/")
            if target.exists():
                shutil.rmtree(target)
            unpacked.rename(target)
        stamp.write_text(digest + "\n")
        self.say(f"{demo.archive}: unpacked into {target}")
        return target

    def ensure_project(self, demo: DemoProject) -> Project:
        project = Project.objects.filter(name=demo.name).first()
        if project is None:
            project = create_project(name=demo.name, description=demo.description)
            self.say(f"project {demo.name}: created")
        else:
            self.say(f"project {demo.name}: exists")
        for task_name, labels in demo.tasks.items():
            task = get_or_create_task(project, task_name)
            before = task.labels.count()
            ensure_labels(task, labels)  # adds missing labels only: a changed order stays
            added = task.labels.count() - before
            if added:
                self.say(f"  task {task_name}: {added} labels ({', '.join(labels)})")
        return project

    def ensure_imported(self, project: Project, folder: Path, *, limit: int | None, by) -> None:
        from ...services import imports

        manifest = folder / "manifest.csv"
        if limit is not None:
            manifest = self.first_rows(manifest, limit)
        source_uri = storage.to_uri(manifest)
        done = ImportJob.objects.filter(project=project, source_uri=source_uri,
                                        state=ImportJob.State.DONE).first()
        if done is not None:
            self.say(f"  {manifest.name}: already imported (job {done.pk}, "
                      f"{project.images.count()} images); not imported again")
            return
        job = imports.start_import(project=project, kind=ImportJob.Kind.MANIFEST, source_uri=source_uri,
                                   by=by, enqueue=False)
        job = imports.run_import(job)
        if job.state != ImportJob.State.DONE:
            raise CommandError(f"importing {manifest} into {project.name} failed: {job.message}")
        self.say(f"  {manifest.name}: imported {job.added} new, {job.unchanged} unchanged, "
                  f"{job.relabelled} relabelled, {job.corrupt} corrupt, {job.refused} refused")

    MIN_TRAIN_IMAGES = 50  # fewer (``--limit``): no demo run, it would teach nothing

    def ensure_demo_run(self, project: Project, train: tuple, *, by) -> None:
        """Queue one training run of the task unless it has one (whatever its state)."""
        from ...models import Annotation, TrainingRun
        from ...services import runs

        task_name, config = train
        task = project.tasks.filter(name=task_name).first()
        if task is None:
            return
        if TrainingRun.objects.filter(task=task).exists():
            self.say(f"  training: task {task_name} has runs already; none started")
            return
        labelled = Annotation.objects.filter(task=task, label__isnull=False, image__split="train").count()
        if labelled < self.MIN_TRAIN_IMAGES:
            self.say(f"  training: only {labelled} labelled training images; no demo run started")
            return
        try:
            run = runs.start_training_run(task=task, config=config, by=by, trigger=TrainingRun.Trigger.DEMO)
        except runs.RunConfigError as e:
            raise CommandError(f"demo training run: {e}") from None
        self.say(f"  training: run {run.id} queued ({config['arch']}, {config['epochs']} epochs); "
                 "the worker started by `make run` trains it")

    @staticmethod
    def first_rows(manifest: Path, limit: int) -> Path:
        """A manifest of the first ``limit`` rows beside the full one (rows are
        interleaved by class, so a few rows already cover many labels)."""
        out = manifest.with_name(f"manifest-first-{limit}.csv")
        with open(manifest, newline="") as f:
            rows = list(csv.reader(f))
        text_rows = rows[:limit + 1]
        if out.is_file():
            with open(out, newline="") as f:
                if list(csv.reader(f)) == text_rows:
                    return out
        with open(out, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(text_rows)
        return out
