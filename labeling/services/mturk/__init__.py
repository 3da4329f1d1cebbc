"""Mechanical Turk: send retag batches out, bring consensus answers back.

- client.py    the boto3 ``mturk`` client (sandbox by default), retries with back-off
- selection.py which images a batch sends (pluggable selectors)
- batches.py   build, price (Decimal, Amazon's fee), send as HTMLQuestion HITs
- sync.py      assignments, approve/reject rules, consensus per image
- csv_io.py    the requester web UI's CSV batch upload and results download
- review.py    the summary an admin reads, apply, workers' quality and blocks
"""
from .batches import (SENDABLE, BatchError, BatchOptions, batch_cost, build_batch, choices, estimate_cost,  # noqa: F401
                      fee_per_assignment, fee_rule, send_batch)
from .client import MTurkError, account_balance, make_client, production_allowed  # noqa: F401
from .csv_io import decisions_csv, export_csv, import_results_csv, layout_html  # noqa: F401
from .review import (apply_batch, block_worker, review_summary, unblock_worker, worker_history,  # noqa: F401
                     workers_overview)
from .selection import SELECTORS, SelectionError, select, selector  # noqa: F401
from .sync import SYNCABLE, compute_consensus, sync_batch  # noqa: F401
