"""``manage.py train PROJECT_SLUG TASK [--arch resnet50] [--epochs 20] ... [--wait | --here]``

Starts a training run exactly as the browser and the API do (services.runs): the label
snapshot is taken now and the run is queued for a worker on the ``gpu`` queue.
``--wait`` follows its progress until it finishes; ``--here`` runs it in this process
instead (a machine with a GPU and the database, but no worker).
"""
from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from mlcore.config import USER_OPTIONS, add_arguments, given

from ...models import Task, TrainingRun
from ...services import runs


class Command(BaseCommand):
    help = "Start a training run of a task (snapshot now, train in a worker, or here with --here)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("task", help="task name")
        add_arguments(parser, USER_OPTIONS)  # mlcore.config: every option a user may set
        parser.add_argument("--config", default="{}", help="more config fields as JSON")
        parser.add_argument("--retrain", type=int, metavar="RUN_ID", help="reuse this run's config (parent)")
        how = parser.add_mutually_exclusive_group()
        how.add_argument("--wait", action="store_true", help="follow the run until it finishes")
        how.add_argument("--here", action="store_true", help="train in this process, not in a worker")

    def handle(self, *args, **o):
        task = Task.objects.filter(project__slug=o["project"], name=o["task"]).select_related("project").first()
        if task is None:
            raise CommandError(f"no task {o['task']!r} in project {o['project']!r}")
        try:
            config = json.loads(o["config"])
        except json.JSONDecodeError as e:
            raise CommandError(f"--config is not JSON: {e}") from None
        if not isinstance(config, dict):
            raise CommandError("--config must be a JSON object")
        parent = None
        if o["retrain"]:
            parent = TrainingRun.objects.filter(pk=o["retrain"], task=task).first()
            if parent is None:
                raise CommandError(f"no run {o['retrain']} of this task")
            config = {**parent.config, **config}
        config.update(given(o, USER_OPTIONS))  # the options given on the command line win
        try:
            run = runs.start_training_run(task=task, config=config, by=None, parent=parent, enqueue=not o["here"],
                                          trigger=TrainingRun.Trigger.RETRAIN if parent else
                                          TrainingRun.Trigger.MANUAL)
        except runs.RunConfigError as e:
            raise CommandError(f"bad config: {e}") from None
        self.stdout.write(f"run {run.id} queued: {task}, {run.n_train} train / {run.n_test} test images, "
                          f"snapshot {run.manifest_sha256[:12]}, output {run.output_uri}")
        if o["here"]:
            run = runs.execute_run(run.id)
        elif o["wait"]:
            run = self.follow(run)
        else:
            return
        self.stdout.write(f"run {run.id}: {run.state}"
                          + (f", test macro-F1 {run.test_macro_f1:.4f}" if run.test_macro_f1 is not None else "")
                          + (f" ({run.state_reason})" if run.state_reason else ""))
        if run.state != TrainingRun.State.DONE:
            raise CommandError(f"run {run.id} {run.state}")

    def follow(self, run: TrainingRun) -> TrainingRun:
        shown = None
        while True:
            run.refresh_from_db()
            p = run.progress or {}
            line = (f"  {run.state} {p.get('phase', '')} epoch {p.get('epoch', '-')}/{p.get('epochs', '-')} "
                    f"step {p.get('step', '-')}/{p.get('steps', '-')}"
                    + (f" loss {p['loss']:.4f}" if isinstance(p.get("loss"), float) else ""))
            if line != shown:
                self.stdout.write(line)
                shown = line
            if run.state in TrainingRun.FINAL_STATES:
                return run
            time.sleep(1)
