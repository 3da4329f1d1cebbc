"""Cursor pagination that refuses a forged cursor with a 404 instead of a 500.

DRF decodes the cursor's base64 and trusts the position inside: ``p=abc`` on an id
ordering reaches the database as ``id > 'abc'`` (a ValueError, a 500). The position is
checked here against the ordering field first.
"""
from django.core.exceptions import ValidationError
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination


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
