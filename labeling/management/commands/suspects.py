"""``manage.py suspects RUN_ID [--k 4] [--fold-epochs N] [--here]``: find suspects in a finished run.

Without ``--here`` the fold runs go to the gpu queue (workers needed) and this returns at once;
``--here`` trains the folds and scores in this process. ``--advance ID`` moves a suspects run
on whose folds finished (what the status page does too).
"""
from django.core.management.base import BaseCommand, CommandError

from labeling.models import SuspectRun, TrainingRun
from labeling.services import suspects


class Command(BaseCommand):
    help = "Find suspects (probably mislabelled images) in a finished training run."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, nargs="?")
        parser.add_argument("--k", type=int, default=suspects.DEFAULTS["k"], help="folds (default 4)")
        parser.add_argument("--fold-epochs", type=int, default=None, help="epochs per fold (default: the run's)")
        parser.add_argument("--here", action="store_true", help="train the folds and score in this process")
        parser.add_argument("--advance", type=int, metavar="SUSPECT_RUN_ID", help="advance a suspects run")

    def handle(self, run_id=None, k=4, fold_epochs=None, here=False, advance=None, **opts):
        if advance:
            sr = suspects.advance(advance)
            if sr is None:
                raise CommandError(f"no suspects run {advance}")
            self.stdout.write(f"suspects {sr.pk}: {sr.state} {sr.progress}")
            return
        run = TrainingRun.objects.filter(pk=run_id).first() if run_id else None
        if run is None:
            raise CommandError(f"no training run {run_id}")
        try:
            sr = suspects.start_suspect_run(run=run, config={"k": k, "fold_epochs": fold_epochs}, enqueue=not here)
        except suspects.SuspectError as e:
            raise CommandError(str(e)) from None
        if not here:
            self.stdout.write(f"suspects {sr.pk} queued ({k} folds on the gpu queue)")
            return
        sr = suspects.execute_here(sr)
        if sr.state != SuspectRun.State.DONE:
            raise CommandError(f"suspects {sr.pk} {sr.state}: {sr.state_reason}")
        self.stdout.write(f"suspects {sr.pk} done: {sr.counts}")
