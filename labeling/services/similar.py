"""Similar images: nearest neighbours in embedding space (any label), for the image page.

The index is built by the suspects run (mlcore.similar.SimilarIndex over the run's
embeddings, ids = image ids) and saved to storage. A web process opens it on first use:
loading maps the file (milliseconds, nothing read whole; an s3:// index is fetched once per
machine into mlcore's cache) and a query reads only the few inverted lists it probes, so
the process stays small and its first image page is as fast as the next. The few most
recent indexes stay open.
"""
from __future__ import annotations

import logging
from functools import lru_cache

from ..models import Annotation, Image, ImageStatus, SuspectRun

logger = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def load_index(uri: str):
    """The SimilarIndex at ``uri``, opened once per process (an index never changes once written)."""
    from mlcore.similar import SimilarIndex

    return SimilarIndex.load(uri)


def index_run(project_id: int) -> SuspectRun | None:
    """The project's latest finished suspects run that has an index."""
    return (SuspectRun.objects.filter(project_id=project_id, state=SuspectRun.State.DONE).exclude(index_uri="")
            .order_by("-finished_at", "-id").first())


def similar_images(image: Image, k: int = 12) -> dict:
    """``{"run": SuspectRun|None, "items": [{"image", "similarity", "label"}]}``: ``image``'s nearest
    neighbours (itself left out); empty when no index knows the image."""
    sr = index_run(image.project_id)
    if sr is None:
        return {"run": None, "items": []}
    try:
        ids, sims = load_index(sr.index_uri).query(int(image.pk), k + 1)
    except (KeyError, ValueError, IndexError):
        return {"run": sr, "items": []}  # an image the index does not know (imported later)
    except Exception:  # noqa: BLE001 - a missing index file must not break the image page
        logger.exception("similar images: index %s unreadable", sr.index_uri)
        return {"run": sr, "items": []}
    pairs = [(int(i), float(s)) for i, s in zip(list(ids), list(sims)) if int(i) != image.pk][:k]
    images = Image.objects.in_bulk([i for i, _ in pairs])
    labels = dict(Annotation.objects.filter(task_id=sr.task_id, image_id__in=[i for i, _ in pairs])
                  .values_list("image_id", "label__name"))
    items = [{"image": images[i], "similarity": s, "label": labels.get(i)} for i, s in pairs
             if i in images and images[i].status == ImageStatus.OK]
    return {"run": sr, "items": items}
