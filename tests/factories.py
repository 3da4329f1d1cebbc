"""Small builders for tests: a project with a task, labels in order, and images."""
from labeling.models import Image, Project
from labeling.services.labels import ensure_labels, get_or_create_task
from labeling.services.retag import retag_image


def make_project(name="Dresses", task="neckline", labels=("v-neck", "round", "square"), **kw) -> tuple:
    project = Project.objects.create(name=name, slug=name.lower().replace(" ", "-"), **kw)
    t = get_or_create_task(project, task)
    by_name = ensure_labels(t, labels)
    return project, t, [by_name[n] for n in labels]


def make_image(project, key, split="train", task=None, label=None, **kw) -> Image:
    image = Image.objects.create(project=project, key=key, uri=f"file:///data/{key}", split=split, **kw)
    if task is not None and label is not None:
        retag_image(image=image, task=task, label=label, expected_version=None, source="import")
    return image
