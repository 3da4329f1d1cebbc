"""The cluster view of a suspects run: each class's core and outliers, group retags."""
from __future__ import annotations

from django.db.models import Count, Q
from django.utils import timezone

from ...models import Annotation, Cluster, ClusterMember, Image, Label, Suspect, SuspectRun, TrainingExclusion
from ..retag import RetagConflict, retag_image
from .annotator_queue import queue

Status = Suspect.Status


def typical_images(sr: SuspectRun, label_id: int | None, n: int = 8) -> list[int]:
    """Image ids of the class's core cluster (not outliers): what the class looks like."""
    if label_id is None:
        return []
    return list(ClusterMember.objects.filter(cluster__suspect_run=sr, cluster__label_id=label_id,
                                             cluster__is_core=True, is_outlier=False)
                .order_by("image_id").values_list("image_id", flat=True)[:n])


def class_clusters(sr: SuspectRun, label_id: int, *, core_limit: int = 48) -> dict:
    """The class's core members (a sample), its outliers grouped by cluster, and counts."""
    clusters = list(Cluster.objects.filter(suspect_run=sr, label_id=label_id))
    core = next((c for c in clusters if c.is_core), None)
    core_ids = list(ClusterMember.objects.filter(cluster=core, is_outlier=False).order_by("image_id")
                    .values_list("image_id", flat=True)[:core_limit]) if core else []
    outliers = list(ClusterMember.objects.filter(cluster__in=clusters, is_outlier=True)
                    .order_by("cluster_id", "image_id").values_list("cluster_id", "image_id"))
    versions = dict(Annotation.objects.filter(task_id=sr.task_id, image_id__in=[i for _, i in outliers])
                    .values_list("image_id", "version"))
    labels_now = dict(Annotation.objects.filter(task_id=sr.task_id, image_id__in=[i for _, i in outliers])
                      .values_list("image_id", "label_id"))
    excluded = set(TrainingExclusion.objects.filter(task_id=sr.task_id, active=True,
                                                    image_id__in=[i for _, i in outliers])
                   .values_list("image_id", flat=True))
    by_id = {c.pk: c for c in clusters}
    groups: dict[int, dict] = {}
    for cid, image_id in outliers:
        g = groups.setdefault(cid, {"cluster": by_id[cid], "images": []})
        g["images"].append({"id": image_id, "version": versions.get(image_id, 0),
                            "label_id": labels_now.get(image_id), "excluded": image_id in excluded})
    return {"clusters": clusters, "core": core, "core_ids": core_ids,
            "groups": sorted(groups.values(), key=lambda g: (not g["cluster"].is_core, -len(g["images"]))),
            "outliers": len(outliers)}


def class_summary(sr: SuspectRun) -> list[dict]:
    """Per class: clusters, core size, outliers, open suspects (the cluster view's index)."""
    labels = {lb.pk: lb for lb in Label.objects.filter(pk__in=sr.run.label_ids)}
    rows = {lid: {"label": labels[lid], "clusters": 0, "core": 0, "outliers": 0, "suspects": 0}
            for lid in sr.run.label_ids if lid in labels}
    for c in Cluster.objects.filter(suspect_run=sr).annotate(n_out=Count("members", filter=Q(members__is_outlier=True))):
        r = rows.get(c.label_id)
        if r:
            r["clusters"] += 1
            r["outliers"] += c.n_out
            if c.is_core:
                r["core"] = c.size
    for lid, n in queue(sr).values_list("given_label_id").annotate(n=Count("id")):
        if lid in rows:
            rows[lid]["suspects"] = n
    return list(rows.values())


def retag_group(sr: SuspectRun, *, versions: dict[int, int], label: Label, by) -> dict:
    """Retag many images to ``label`` in one action, each with the version the page saw
    (one LabelEvent per image; conflicts are reported, not overwritten)."""
    if label.task_id != sr.task_id:
        raise ValueError("the label is not a label of this task")
    images = {im.pk: im for im in Image.objects.filter(project_id=sr.project_id, pk__in=list(versions))}
    out = {"changed": [], "unchanged": [], "conflicts": []}
    for image_id, version in versions.items():
        image = images.get(int(image_id))
        if image is None:
            continue
        try:
            r = retag_image(image=image, task=sr.task, label=label, by=by, expected_version=int(version),
                            reference=f"suspects {sr.pk} cluster")
        except RetagConflict:
            out["conflicts"].append(image.pk)
            continue
        out["changed" if r.event else "unchanged"].append(image.pk)
        Suspect.objects.filter(suspect_run=sr, image=image, status=Status.OPEN).update(
            status=Status.RETAGGED if r.event else Status.KEPT, resolved_by=by, resolved_at=timezone.now(),
            resolved_label=label, lease_holder=None, lease_until=None)
    return out

