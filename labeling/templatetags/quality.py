"""Template helpers of the quality pages: metric numbers, deltas (green up, red down),
bar widths, heat-map colours, durations; and the image page's prediction panel."""
from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from ..services.quality import FLAT  # a change smaller than this is shown as flat

register = template.Library()


@register.filter
def metric(value, digits=3):
    """0.87341 -> "0.873"; None -> "—"."""
    if value is None or value == "":
        return "—"
    return f"{float(value):.{int(digits)}f}"


@register.filter
def pct(value, digits=1):
    if value is None:
        return "—"
    return f"{100 * float(value):.{int(digits)}f}%"


@register.filter
def width(value):
    """A share in 0..1 as a CSS width percentage."""
    try:
        return f"{max(0.0, min(1.0, float(value))) * 100:.1f}%"
    except (TypeError, ValueError):
        return "0%"


@register.simple_tag
def delta(value, digits=3, integer=False):
    """The change against the previous run: green when up, red when down."""
    if value is None or value == "":
        return mark_safe('<span class="delta flat" title="no previous run to compare with"></span>')
    value = float(value)
    if integer:
        text = f"{int(value):+d}"
        kind = "up" if value > 0 else "down" if value < 0 else "flat"
    else:
        kind = "up" if value > FLAT else "down" if value < -FLAT else "flat"
        text = f"{value:+.{int(digits)}f}" if kind != "flat" else "±0"
    return format_html('<span class="delta {}" data-delta="{}">{}</span>', kind, f"{value:.6f}", text)


@register.filter
def heat(cell):
    """Background of a confusion cell: blue on the diagonal, red off it, by row share."""
    share = float(cell.get("share") or 0)
    if not cell.get("count"):
        return ""
    alpha = 0.08 + 0.87 * share ** 0.6
    rgb = "58,91,217" if cell.get("diagonal") else "214,69,65"
    ink = "#fff" if alpha > 0.5 else "#1b2030"
    return f"background: rgba({rgb},{alpha:.3f}); color: {ink};"


@register.filter
def duration(seconds):
    if seconds is None:
        return "—"
    s = int(round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
