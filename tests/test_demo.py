"""The demo that `make run` serves: shipped archives and `manage.py load_demo`."""
import csv
import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from labeling.management.commands.load_demo import DEFAULT_PASSWORD, PROJECTS
from labeling.models import (Annotation, Image, ImageStatus, ImportJob, Label, LabelEvent, Project,
                             StorageRoot, Task)
from labeling.services.labels import ordered_labels
from labeling.services.roles import role_of

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo"
LIMIT = 24


def test_demo_archives_ship_licence_provenance_and_manifest():
    assert sum((DEMO / d.archive).stat().st_size for d in PROJECTS) < 8_500_000
    for demo in PROJECTS:
        with zipfile.ZipFile(DEMO / demo.archive) as zf:
            names = set(zf.namelist())
            assert {f"{demo.folder}/LICENSE", f"{demo.folder}/PROVENANCE.md", f"{demo.folder}/manifest.csv"} <= names
            assert all(n.startswith(f"{demo.folder}/") and ".." not in n.split("/") for n in names)
            rows = list(csv.DictReader(io.TextIOWrapper(zf.open(f"{demo.folder}/manifest.csv"), "utf-8")))
        assert list(rows[0]) == ["uri", "split", *demo.tasks]
        assert all(f"{demo.folder}/{r['uri']}" in names for r in rows)
        assert {r["split"] for r in rows} <= {"train", "test", ""}
        for task, labels in demo.tasks.items():
            # Every label the manifest uses has its place in the project's order.
            assert {r[task] for r in rows} <= set(labels), task
    assert len(rows) == 4000  # Fashion-MNIST: 3,000 train + 1,000 test


@pytest.fixture
def demo_var(tmp_path, settings, monkeypatch):
    settings.VAR_DIR = tmp_path / "var"
    monkeypatch.delenv("RETAG_DEMO_PASSWORD", raising=False)
    return settings.VAR_DIR


def snapshot():
    return {model.__name__: model.objects.count()
            for model in (Project, Task, Label, Image, Annotation, LabelEvent, ImportJob, StorageRoot,
                          get_user_model())}


def test_load_demo_creates_projects_users_and_images(db, demo_var, capsys):
    call_command("load_demo", "--limit", str(LIMIT))
    out = capsys.readouterr().out
    assert "Clothing" in out and "imported" in out

    for demo in PROJECTS:
        project = Project.objects.get(name=demo.name)
        assert sorted(project.tasks.values_list("name", flat=True)) == sorted(demo.tasks)
        for task_name, labels in demo.tasks.items():
            task = project.tasks.get(name=task_name)
            assert [lb.name for lb in ordered_labels(task)] == labels
        images = Image.objects.filter(project=project)
        assert images.count() == LIMIT
        assert set(images.values_list("status", flat=True)) == {ImageStatus.OK}
        assert set(images.values_list("split", flat=True)) == {"train", "test"}
        for task in project.tasks.all():
            # Every image has a label for every facet, set by the import.
            assert Annotation.objects.filter(task=task, label__isnull=False).count() == LIMIT
            assert LabelEvent.objects.filter(task=task, source="import").count() == LIMIT

    clothing = Project.objects.get(name="Clothing")
    audience = clothing.tasks.get(name="audience")
    assert set(Annotation.objects.filter(task=audience).values_list("label__name", flat=True)) == {"adult", "kids"}
    assert Annotation.objects.filter(task=clothing.tasks.get(name="category")).values(
        "label").distinct().count() >= 10
    fmnist = Project.objects.get(name="Fashion-MNIST")
    assert Annotation.objects.filter(task__project=fmnist, label__name="T-shirt/top").exists()

    users = get_user_model().objects
    for name in ("admin", "scientist", "annotator"):
        user = users.get(username=name)
        assert role_of(user) == name
        assert user.check_password(DEFAULT_PASSWORD)
    assert users.get(username="admin").is_superuser
    assert not users.get(username="annotator").is_staff

    assert (demo_var / "demo" / "clothing" / "LICENSE").is_file()
    assert (demo_var / "demo" / "fashion-mnist" / "PROVENANCE.md").is_file()
    assert StorageRoot.objects.count() == 1


def test_load_demo_twice_changes_nothing(db, demo_var, capsys):
    call_command("load_demo", "--limit", str(LIMIT), "--quiet")
    assert capsys.readouterr().out == ""
    before = snapshot()
    user = get_user_model().objects.get(username="annotator")
    user.set_password("changed-in-the-app")
    user.save()
    clothing = Project.objects.get(name="Clothing")
    category = clothing.tasks.get(name="category")
    reordered = [lb.id for lb in reversed(ordered_labels(category))]
    Label.objects.filter(id=reordered[0]).update(position=0)  # an admin moved a label first
    order = [lb.id for lb in ordered_labels(category)]
    unpacked = demo_var / "demo" / "clothing" / "manifest.csv"
    mtime = unpacked.stat().st_mtime_ns

    call_command("load_demo", "--limit", str(LIMIT))
    out = capsys.readouterr().out
    assert "already imported" in out and "already unpacked" in out
    assert snapshot() == before
    assert unpacked.stat().st_mtime_ns == mtime
    assert [lb.id for lb in ordered_labels(category)] == order
    assert get_user_model().objects.get(username="annotator").check_password("changed-in-the-app")


def test_load_demo_password_from_environment(db, demo_var, monkeypatch):
    monkeypatch.setenv("RETAG_DEMO_PASSWORD", "from-the-env-1")
    call_command("load_demo", "--limit", "2", "--quiet")
    assert get_user_model().objects.get(username="scientist").check_password("from-the-env-1")
