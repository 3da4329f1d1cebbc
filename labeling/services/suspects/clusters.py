"""The cluster view of a suspects run: each class's core and outliers, group retags."""
from __future__ import annotations

from django.utils import timezone

from ...models import Annotation, Cluster, ClusterMember, Image, Label, Suspect, SuspectRun, TrainingExclusion
from ..retag import RetagConflict, retag_image
from .annotator_queue import open_counts

Status = Suspect.Status


def typical_images(sr: SuspectRun, label_id: int | None, n: int = 8) -> list[int]:
    """Image ids of the class's core cluster (not outliers): what the class looks like."""
    if label_id is None:
        return []
    return list(ClusterMember.objects.filter(cluster__suspect_run=sr, cluster__label_id=label_id,
                                             cluster__is_core=True, is_outlier=False)
                .order_by("image_id").values_list("image_id", flat=True)[:n])


OUTLIERS_PER_PAGE = 100


def class_clusters(sr: SuspectRun, label_id: int, *, page: int = 1, core_limit: int = 48) -> dict:
    """The class's core members (a sample), a page of its outliers (:data:`OUTLIERS_PER_PAGE`,
    the core cluster's first, then the largest clusters') grouped by cluster, and counts."""
    clusters = list(Cluster.objects.filter(suspect_run=sr, label_id=label_id))
    core = next((c for c in clusters if c.is_core), None)
    core_ids = list(ClusterMember.objects.filter(cluster=core, is_outlier=False).order_by("image_id")
                    .values_list("image_id", flat=True)[:core_limit]) if core else []
    total = class_figures(sr).get(label_id, {}).get("outliers", 0)
    pages = max(1, -(-total // OUTLIERS_PER_PAGE))
    page = min(max(1, page), pages)
    first = (page - 1) * OUTLIERS_PER_PAGE
    outliers = list(ClusterMember.objects.filter(cluster__in=clusters, is_outlier=True)
                    .order_by("-cluster__is_core", "-cluster__size", "cluster_id", "image_id")
                    .values_list("cluster_id", "image_id")[first:first + OUTLIERS_PER_PAGE])
    ids = [i for _, i in outliers]
    now = {i: (version, lab) for i, version, lab in Annotation.objects.filter(task_id=sr.task_id, image_id__in=ids)
           .values_list("image_id", "version", "label_id")}
    excluded = dict(TrainingExclusion.objects.filter(task_id=sr.task_id, active=True, image_id__in=ids)
                    .values_list("image_id", "label_id"))
    others = dict(Label.objects.filter(pk__in={lid for lid in excluded.values() if lid not in (None, label_id)})
                  .values_list("pk", "name"))
    by_id = {c.pk: c for c in clusters}
    groups: dict[int, dict] = {}
    for cid, image_id in outliers:
        g = groups.setdefault(cid, {"cluster": by_id[cid], "images": []})
        version, label_now = now.get(image_id, (0, None))
        g["images"].append({"id": image_id, "version": version, "label_id": label_now,
                            "excluded": image_id in excluded,
                            # Excluded from another class: putting this class back leaves it out.
                            "excluded_from_other": others.get(excluded.get(image_id))})
    return {"clusters": clusters, "core": core, "core_ids": core_ids, "groups": list(groups.values()),
            "outliers": total, "page": page, "pages": pages, "first": first + 1 if outliers else 0,
            "last": first + len(outliers)}


def class_figures(sr: SuspectRun) -> dict[int, dict]:
    """``sr.class_figures`` by label id: suspects, clusters, core size, outliers (as scored)."""
    return {int(k): f for k, f in (sr.class_figures or {}).items()}


def class_summary(sr: SuspectRun) -> list[dict]:
    """Per class: clusters, core size, outliers (stored when scored) and open suspects now (the
    cluster view's index), in the run's label order."""
    labels = {lb.pk: lb for lb in Label.objects.filter(pk__in=sr.run.label_ids)}
    figures = class_figures(sr)
    open_now = open_counts([sr]).get(sr.pk, {}).get("by_class", {})
    return [{"label": labels[lid], **{k: figures.get(lid, {}).get(k, 0) for k in ("clusters", "core", "outliers")},
             "suspects": open_now.get(lid, 0)} for lid in sr.run.label_ids if lid in labels]


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

