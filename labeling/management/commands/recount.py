"""``manage.py recount [PROJECT ...]``: rebuild the image and label counts the pages show
from the images and annotations (all projects when none is named), and say which ones were
off. The database keeps them on every change (migration 0011); this is for a database
loaded with its triggers off, or to check them."""
from django.core.management.base import BaseCommand, CommandError

from labeling.models import Project
from labeling.services.counts import recount, stored


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("projects", nargs="*", help="project slugs (default: every project)")

    def handle(self, *args, **o):
        projects = list(Project.objects.filter(slug__in=o["projects"]) if o["projects"] else Project.objects.all())
        unknown = set(o["projects"]) - {p.slug for p in projects}
        if unknown:
            raise CommandError(f"no project {', '.join(sorted(unknown))}")
        for project in projects:
            before = stored(project)
            images, labels = recount(project)
            state = "were right" if before == (images, labels) else "were off; rebuilt"
            self.stdout.write(f"{project.slug}: {sum(images.values())} images, "
                              f"{sum(labels.values())} labels; the counts {state}")
