"""``manage.py export_manifest PROJECT TASK``: snapshot a task's labels as a training manifest."""
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Task
from labeling.services.manifests import build_training_manifest


class Command(BaseCommand):
    help = "Write a uri,label,split training manifest (and its JSON sidecar) and print its URI."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("task", help="task name")

    def handle(self, *args, project, task, **options):
        found = Task.objects.filter(project__slug=project, name=task).select_related("project").first()
        if found is None:
            raise CommandError(f"no task {task!r} in project {project!r}")
        manifest = build_training_manifest(found)
        self.stderr.write(f"{manifest.rows} rows ({manifest.counts['train']} train, "
                          f"{manifest.counts['test']} test), {len(manifest.labels)} labels, "
                          f"sha256 {manifest.sha256}")
        self.stdout.write(manifest.uri)
