"""Suspects pages fast at a million images (issue #17), and a skip that leaves a suspect open
(issue #15).

- ``SuspectRun.class_figures``: per class, the suspects, clusters, core size and outliers, written
  when a run is scored (filled here for the runs scored before);
- ``annotation_changed_idx``: the annotations changed since a run was scored, the only ones that
  can make its open suspects stale (the open count starts from the run's suspects);
- ``cluster_member_outlier_idx``: a class's outliers a page at a time;
- a skip no longer settles a suspect: ``skipped`` rows become open again, with who skipped them
  (``skipped_by``, ``skipped_at``);
- ``counts["cluster_cuts"]`` (by label name) goes: the cuts are ``SuspectRun.cluster_cuts``, by id.

Numbered 0012 after 0010 on purpose (0011 is another branch's); re-pointed at the merge.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import Count, F, Q


def forwards(apps, schema_editor):
    Suspect = apps.get_model("labeling", "Suspect")
    SuspectRun = apps.get_model("labeling", "SuspectRun")
    Cluster = apps.get_model("labeling", "Cluster")
    Suspect.objects.filter(status="skipped").update(status="open", skipped_by=F("resolved_by"),
                                                     skipped_at=F("resolved_at"), resolved_by=None, resolved_at=None,
                                                     resolved_label=None)
    for sr in SuspectRun.objects.exclude(scored_at=None).iterator():
        figures: dict[str, dict] = {}

        def row(label_id):
            return figures.setdefault(str(label_id), {"suspects": 0, "clusters": 0, "core": 0, "outliers": 0})

        for label_id, n in (Suspect.objects.filter(suspect_run=sr).values_list("given_label_id")
                            .annotate(n=Count("id")).order_by()):
            if label_id is not None:
                row(label_id)["suspects"] = n
        for c in Cluster.objects.filter(suspect_run=sr).annotate(
                n_out=Count("members", filter=Q(members__is_outlier=True))):
            r = row(c.label_id)
            r["clusters"] += 1
            r["outliers"] += c.n_out
            if c.is_core:
                r["core"] = c.size
        counts = {k: v for k, v in (sr.counts or {}).items() if k != "cluster_cuts"}
        SuspectRun.objects.filter(pk=sr.pk).update(class_figures=figures, counts=counts)


class Migration(migrations.Migration):

    dependencies = [
        ('labeling', '0011_counts'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='suspect',
            name='skipped_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='suspect',
            name='skipped_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='suspectrun',
            name='class_figures',
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='suspect',
            name='status',
            field=models.CharField(choices=[('open', 'open'), ('retagged', 'retagged'), ('kept', 'kept')], default='open', max_length=10),
        ),
        migrations.AddIndex(
            model_name='annotation',
            index=models.Index(fields=['task', 'updated_at'], name='annotation_changed_idx'),
        ),
        migrations.AddIndex(
            model_name='clustermember',
            index=models.Index(condition=models.Q(('is_outlier', True)), fields=['cluster', 'image'], name='cluster_member_outlier_idx'),
        ),
        migrations.AddIndex(
            model_name='suspect',
            index=models.Index(condition=models.Q(('skipped_at__isnull', False)), fields=['suspect_run', 'skipped_at'], name='suspect_skipped_idx'),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
