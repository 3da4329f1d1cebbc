"""``manage.py set_truth_task PROJECT TRUTH_TASK TASK``: mark TRUTH_TASK as the known-correct
labels of TASK (a benchmark project), e.g. after importing a manifest with the columns
``category`` (the labels to clean) and ``category_clean`` (the truth). The truth task is then
hidden from the grid and the image pages, and every suspects run of TASK is measured against it
(precision, recall, F1, precision at k, AUROC on the suspects run page). ``--clear`` unmarks it."""
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Task
from labeling.services.suspect_quality import set_truth_task


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("truth_task")
        parser.add_argument("task", nargs="?")
        parser.add_argument("--clear", action="store_true")

    def handle(self, *args, **o):
        truth = Task.objects.filter(project__slug=o["project"], name=o["truth_task"]).first()
        if truth is None:
            raise CommandError(f"no task {o['truth_task']!r} in project {o['project']!r}")
        if o["clear"]:
            truth.truth_of = None
            truth.save(update_fields=["truth_of"])
            self.stdout.write(f"{truth.name} is an ordinary task again")
            return
        task = Task.objects.filter(project_id=truth.project_id, name=o["task"] or "").first()
        if task is None:
            raise CommandError(f"no task {o['task']!r} in project {o['project']!r}")
        try:
            set_truth_task(truth=truth, of=task)
        except ValueError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(f"{truth.name} is the truth of {task.name} (hidden from annotators)")
