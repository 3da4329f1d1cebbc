"""Reading a project the way the pages show it, one module a side:

- :mod:`.filter`: the grid's filter (from GET parameters), its images, an image's neighbours
- :mod:`.sort`: the sort orders a grid may be in
- :mod:`.grid`: a page of the grid by key, in id order or sorted; corrupt/missing images
- :mod:`.summary`: the counts (projects by status, the filter task's labels), from the kept counts
- :mod:`.image`: one image's facets and history

The names callers use are here, so ``browse.grid_page`` and ``browse.parse_filter`` read as before;
a setting is read where it is used (``browse.grid.PAGE_SIZE``, ``browse.grid.SORT_LIMIT``).
"""
from .filter import SEARCH_MAX, UNLABELLED, GridFilter, int_or_none, neighbours, parse_filter, search_keys
from .grid import PAGE_SIZE, SORT_LIMIT, GridCell, GridPage, grid_page, problem_images
from .image import Facet, event_row, facets, history
from .sort import SORT_CHOICES, SORT_KEYS, GridSort, SortKey, SortUnavailable, parse_sort
from .summary import LabelCount, LabelCounts, ProjectSummary, label_counts, project_summaries, project_summary

__all__ = [
    "SEARCH_MAX", "UNLABELLED", "GridFilter", "int_or_none", "neighbours", "parse_filter", "search_keys",
    "PAGE_SIZE", "SORT_LIMIT", "GridCell", "GridPage", "grid_page", "problem_images",
    "Facet", "event_row", "facets", "history",
    "SORT_CHOICES", "SORT_KEYS", "GridSort", "SortKey", "SortUnavailable", "parse_sort",
    "LabelCount", "LabelCounts", "ProjectSummary", "label_counts", "project_summaries", "project_summary",
]
