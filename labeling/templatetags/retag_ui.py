"""Template helpers of the pages that retag: the key that picks a label
(services.labels.label_key) and the source badge of a label event (services.retag.source_badge)."""
from django import template

from ..services.labels import label_key as _label_key
from ..services.retag import source_badge as _source_badge

register = template.Library()


@register.filter
def label_key(index) -> str:
    """``{{ forloop.counter0|label_key }}``: the key of the label at that place of its task's order."""
    return _label_key(int(index))


@register.filter
def source_badge(event):
    """``{% with badge=e|source_badge %}``: ``badge.key`` (a CSS class) and ``badge.text``."""
    return _source_badge(event)
