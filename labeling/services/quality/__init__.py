"""Reading training runs the way the quality pages and their API show them.

Everything here reads what a finished run left in the database (services.runs loads
it): the run's ``metrics`` JSON (per split: macro/micro averages and the confusion
matrix in the order of ``run.label_ids``), its ClassMetric rows (run x split x label)
and its Prediction rows (run x image).

Costs, at a million predictions per run:
- the dashboard, the confusion matrix and the F1-over-runs series read the metrics
  JSON and ClassMetric only: O(classes) (x runs), never a scan of predictions;
- a false-negative / false-positive / confusion-cell grid is a keyset page over the
  prediction indexes (``pred_fn_idx`` / ``pred_fp_idx``: run, split, label, correct,
  -confidence, id), so page 5,000 costs what page 1 costs: no OFFSET, no COUNT (the
  number of rows comes from the confusion matrix).

The modules: ``common`` (splits, grid kinds, the error, a run's labels), ``progress`` (a
run's status, progress and loss curve), ``metrics`` (the dashboard, the confusion matrix,
F1 over runs), ``grids`` (the false-negative / false-positive / cell pages), ``images``
(one image's predictions). Callers use the names below as ``quality.X``.
"""
from .common import *  # noqa: F401,F403
from .grids import *  # noqa: F401,F403
from .images import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .progress import *  # noqa: F401,F403
