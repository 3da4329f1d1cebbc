"""Every pagination class of the API. The lists are keyset pages (DRF's cursor
pagination: page 10,000 costs what page 1 costs) but for the short lists.

CheckedCursorPagination refuses a forged cursor with a 404 instead of a 500: DRF decodes the cursor's base64 and trusts the position inside: ``p=abc`` on an id
ordering reaches the database as ``id > 'abc'`` (a ValueError, a 500). The position is
checked here against the ordering field first.
"""
from django.core.exceptions import ValidationError
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination


class CheckedCursorPagination(CursorPagination):
    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        if cursor is None or cursor.position is None:
            return cursor
        field_name = self.ordering[0].lstrip("-") if isinstance(self.ordering, (list, tuple)) else self.ordering.lstrip("-")
        queryset = getattr(self, "_checked_queryset", None)
        try:
            if queryset is not None:
                field = queryset.model._meta.get_field(field_name)
                value = field.to_python(cursor.position)
                if field.get_internal_type() in ("AutoField", "BigAutoField", "IntegerField", "BigIntegerField",
                                                 "PositiveIntegerField") and not 0 <= value <= 2**63 - 1:
                    raise ValueError("out of range")
        except (ValidationError, ValueError, TypeError, OverflowError):
            raise NotFound(self.invalid_cursor_message) from None
        return cursor

    def paginate_queryset(self, queryset, request, view=None):
        self._checked_queryset = queryset
        return super().paginate_queryset(queryset, request, view)


class IdCursorPagination(CheckedCursorPagination):
    """Keyset pages in id order (``id > cursor``): images, annotations."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class NewestFirstCursorPagination(IdCursorPagination):
    """Events and imports, newest first."""

    ordering = "-id"


class RunPagination(NewestFirstCursorPagination):
    """Training runs, newest first, in pages of 50."""

    page_size = 50
    max_page_size = 500


class BatchPagination(CheckedCursorPagination):
    """Mechanical Turk batches, newest first."""

    ordering = "-created_at"


class SmallPagination(PageNumberPagination):
    """For the short lists (projects, tasks, labels, storage roots)."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
