"""One image: what the latest finished run of every task predicted for it."""
from __future__ import annotations

import numpy as np

from ...models import Annotation, Image, Prediction, Task
from .common import TOP_PROBS, run_labels

# --- one image: what the latest run of every task said -------------------------------------------

def decode_probs(data) -> np.ndarray:
    """The float16 probability bytes of a Prediction as a float32 vector."""
    return np.frombuffer(bytes(data or b""), dtype=np.float16).astype(np.float32)


def image_predictions(image: Image, top: int = TOP_PROBS) -> list[dict]:
    """For each task of the image's project: the latest finished run and what it predicted
    for the image (predicted label, confidence, the label it was given then, the top
    probabilities). Tasks without a finished run, or whose run did not see the image, say so.
    """
    from ..runs import latest_finished_run

    out = []
    tasks = list(Task.objects.filter(project_id=image.project_id).order_by("name", "id"))
    current = {a.task_id: a.label_id for a in Annotation.objects.filter(image=image)}
    for task in tasks:
        run = latest_finished_run(task)
        entry = {"task": task.id, "task_name": task.name, "run": run.id if run else None, "prediction": None}
        if run is not None:
            p = Prediction.objects.filter(run=run, image=image).first()
            if p is not None:
                names = {lb.id: lb.name for lb in run_labels(run)}
                probs = decode_probs(p.probs)
                order = np.argsort(-probs, kind="stable")[:top]
                entry["prediction"] = {
                    "split": p.split,
                    "predicted_label": p.predicted_label_id,
                    "predicted_name": names.get(p.predicted_label_id),
                    "given_label": p.given_label_id,
                    "given_name": names.get(p.given_label_id),
                    "current_label": current.get(task.id),
                    "confidence": p.confidence,
                    "correct": p.correct,
                    "top": [{"label": run.label_ids[i], "name": names.get(run.label_ids[i]),
                             "prob": round(float(probs[i]), 4)}
                            for i in order if i < len(run.label_ids)],
                }
        out.append(entry)
    return out
