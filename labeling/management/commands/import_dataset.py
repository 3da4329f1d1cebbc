"""``manage.py import_dataset PROJECT SOURCE``: import a folder, zip, CSV manifest or S3 prefix."""
import os

from django.core.management.base import BaseCommand, CommandError

from labeling.models import ImportJob, Project
from labeling.services.imports import MANIFEST_COLUMNS, ImportRefused, guess_kind, run_import, start_import
from labeling.services.projects import create_project
from labeling.services.storage_roots import SourceRefused, add_root

KINDS = {"folder": ImportJob.Kind.FOLDER, "manifest": ImportJob.Kind.MANIFEST, "s3": ImportJob.Kind.S3_PREFIX}


class Command(BaseCommand):
    help = ("Import images and labels into a project (an idempotent sync: run it again to pick up "
            "changes). Runs here and prints a summary; --async queues it for a Celery worker.")

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("source", help=f"folder, .zip, manifest .csv with columns {MANIFEST_COLUMNS} "
                                            "(path or s3://) or s3:// prefix")
        parser.add_argument("--kind", choices=sorted(KINDS), help="default: guessed from SOURCE")
        parser.add_argument("--task", default="label", help="task name for folder/S3 layouts (default: label)")
        parser.add_argument("--create-project", action="store_true", help="create the project if it is new")
        parser.add_argument("--allow-root", action="store_true",
                            help="add SOURCE's folder (or prefix) to the allowed storage roots first")
        parser.add_argument("--async", dest="run_async", action="store_true", help="queue it for a worker")

    def handle(self, *args, project, source, kind, task, create_project, allow_root, run_async, **options):
        kind = KINDS[kind] if kind else guess_kind(source)
        proj = self._project(project, create_project)
        if allow_root:
            self._allow(source, kind)
        try:
            job = start_import(project=proj, kind=kind, source_uri=source, options={"task": task},
                               enqueue=run_async)
        except ImportRefused as e:
            raise CommandError(f"import refused: {e.reason}") from None
        if run_async:
            self.stdout.write(f"import job {job.id} queued ({job.source_uri})")
            return
        job = run_import(job)
        self._summary(job)
        if job.state != ImportJob.State.DONE:
            raise CommandError(f"import job {job.id} failed: {job.message}")

    def _project(self, slug: str, create: bool) -> Project:
        found = Project.objects.filter(slug=slug).first()
        if found:
            return found
        if not create:
            raise CommandError(f"no project {slug!r} (add --create-project to create it)")
        return create_project(name=slug)

    def _allow(self, source: str, kind: str) -> None:
        """A folder or prefix is itself the root; a manifest or archive allows its folder."""
        root = source if kind == ImportJob.Kind.S3_PREFIX or not source.lower().endswith((".csv", ".zip")) \
            else source.rsplit("/", 1)[0] or "/"
        if "://" not in root:  # a shell path (../photos is usual here): the root is its folder, printed below
            root = os.path.abspath(root)
        try:
            self.stdout.write(f"allowed storage root: {add_root(root, note='import_dataset --allow-root').uri}")
        except SourceRefused as e:
            raise CommandError(e.reason) from None

    def _summary(self, job: ImportJob) -> None:
        self.stdout.write(f"import job {job.id}: {job.state} - {job.message}")
        for p in job.problems[:20]:
            self.stdout.write(f"  row {p['row']}: {p['uri']}: {p['reason']}")
        if job.problems_total > 20:
            self.stdout.write(f"  ... {job.problems_total - 20} more problem(s)")
