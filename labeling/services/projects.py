"""Projects and where their files go."""
from __future__ import annotations

from django.conf import settings
from django.utils.text import slugify

from mlcore import storage

from ..models import Project


def create_project(*, name: str, description: str = "", test_ratio: float | None = None) -> Project:
    if not 0 <= (test_ratio if test_ratio is not None else settings.DEFAULT_TEST_RATIO) < 1:
        raise ValueError("test_ratio must be in [0, 1)")
    slug = slugify(name)[:190] or "project"
    return Project.objects.create(
        name=name, slug=slug, description=description,
        test_ratio=settings.DEFAULT_TEST_RATIO if test_ratio is None else test_ratio)


def project_storage_uri(project: Project, *parts: str) -> str:
    """Where Retag writes a project's files (thumbnails, manifests, models)."""
    return storage.join(settings.STORAGE_URI, "projects", project.slug, *parts)
