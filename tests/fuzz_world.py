"""What the fuzz and permission-matrix tests share: one small world with an object behind
every kind of id a URL takes, the users of each role, and the site's URL patterns read
from the resolver (so a new route is seen without anyone listing it)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from labeling.models import (Annotation, CleaningRun, ImportJob, LabelEvent, MTurkBatch, MTurkItem, StorageRoot, Suspect,
                             SuspectRun)
from labeling.services.mturk.batches import signed_image_url
from tests.factories import make_image, make_project
from tests.test_quality import make_run

ROLES = ("anonymous", "annotator", "scientist", "admin")
WORKER_ID = "AFUZZWORKER1"


def walk(patterns=None, prefix: str = ""):
    """Every URL pattern of the site as ``(route, pattern)``; routes in ``path()`` syntax
    (regex routes, e.g. DRF's format suffixes, are given as their regex)."""
    for p in get_resolver().url_patterns if patterns is None else patterns:
        route = str(p.pattern)
        route = route.lstrip("^").rstrip("$") if route.startswith("^") else route
        if isinstance(p, URLResolver):
            yield from walk(p.url_patterns, prefix + route)
        elif isinstance(p, URLPattern):
            yield prefix + route, p


def normalize(route: str) -> str:
    """A route in OpenAPI's syntax: ``/api/projects/{id}/`` for ``(?P<pk>[^/.]+)`` or ``<int:pk>``
    (drf-spectacular names a ``pk`` ``id``)."""
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
    route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    return route.replace("{pk}", "{id}")


def is_format_suffix(route: str) -> bool:
    """DRF's ``.json`` twins of router routes: the same view, the same checks."""
    return "(?P<format>" in route or "<drf_format_suffix:" in route


def site_routes() -> list[str]:
    return ["/" + route for route, _ in walk()]


def api_routes() -> list[str]:
    return [r for r in site_routes() if r.startswith("/api/")]


def page_routes() -> list[str]:
    """The pages and their JSON endpoints: everything but the API (fuzzed from its schema)
    and Django's own admin (Django's code, behind the admin role)."""
    return [r for r in site_routes() if not r.startswith(("/api/", "/django-admin/"))]


@dataclass
class World:
    users: dict
    objects: dict = field(default_factory=dict)

    def id_for(self, route: str, name: str):
        """The id of a real object for path parameter ``name`` of ``route`` (either syntax)."""
        by_name = {"slug": "project_slug", "run_id": "run", "task_id": "task", "image_id": "image",
                   "job_id": "job", "token": "image_token", "sr_id": "suspect_run", "suspect_id": "suspect", "batch_id": "batch",
                   "path": "static_path"}
        if name == "job_id" and route.startswith("/cleaning/"):
            return self.objects["cleaning"]
        if name in by_name:
            return self.objects[by_name[name]]
        # id / pk: the resource the path names.
        prefixes = [("/api/cleaning-runs/", "cleaning"), ("/api/mturk/workers/", "worker"), ("/api/mturk/batches/", "batch"),
                    ("/api/suspect-runs/", "suspect_run"), ("/api/suspects/", "suspect"),
                    ("/api/projects/", "project"), ("/api/tasks/", "task"), ("/api/labels/", "label"),
                    ("/api/images/", "image"), ("/api/annotations/", "annotation"), ("/api/events/", "event"),
                    ("/api/imports/", "job"), ("/api/storage-roots/", "root"), ("/api/runs/", "run")]
        for prefix, key in prefixes:
            if route.startswith(prefix):
                return self.objects[key]
        raise KeyError(f"no object for {name!r} in {route}: add one to tests/fuzz_world.py")


def build_world(make_user, tmp_path) -> World:
    users = {"anonymous": None, **{role: make_user(role) for role in ROLES[1:]}}
    project, task, labels = make_project(name="Fuzz")
    images = {"test": [make_image(project, f"test/{i}.jpg", split="test", task=task, label=labels[i % 3])
                       for i in range(3)],
              "train": [make_image(project, f"train/{i}.jpg", split="train", task=task, label=labels[i % 3])
                        for i in range(3)]}
    rows = [(0, 0, .9), (1, 2, .8), (2, 1, .7)]
    run = make_run(task, labels, images, {"test": rows, "train": rows}, by=users["scientist"])
    sr = SuspectRun.objects.create(project=project, task=task, run=run, config={"k": 2},
                                   state=SuspectRun.State.DONE, finished_at=timezone.now())
    image = images["train"][1]
    suspect = Suspect.objects.create(suspect_run=sr, image=image, task=task, score=.9, given_label=labels[1],
                                     suggested_label=labels[2], version=1)
    job = ImportJob.objects.create(project=project, kind="manifest", source_uri=(tmp_path / "m.csv").as_uri(),
                                   created_by=users["admin"])
    root = StorageRoot.objects.create(uri=(tmp_path / "root").as_uri() + "/")
    batch = MTurkBatch.objects.create(project=project, task=task, name="fuzz", title="t", description="d",
                                      reward="0.05", created_by=users["admin"])
    MTurkItem.objects.create(batch=batch, image=image, expected_version=1)
    cleaning = CleaningRun.objects.create(project=project, task=task, run=run, config={"rounds": 1},
                                          created_by=users["scientist"])
    image_token = signed_image_url(batch, image, "http://testserver").rstrip("/").rsplit("/", 1)[-1]
    objects = {
        "project": project.id, "project_slug": project.slug, "task": task.id, "label": labels[0].id,
        "image": image.id, "annotation": Annotation.objects.filter(image=image).values_list("id", flat=True)[0],
        "event": LabelEvent.objects.filter(image=image).values_list("id", flat=True)[0], "job": job.id,
        "root": root.id, "run": run.id, "suspect_run": sr.id, "suspect": suspect.id, "batch": batch.id,
        "worker": WORKER_ID, "cleaning": cleaning.id, "image_token": image_token,
        "static_path": "retag.css",  # /static/{path}: 404 unless collectstatic ran, never a 5xx
    }
    return World(users=users, objects=objects)
