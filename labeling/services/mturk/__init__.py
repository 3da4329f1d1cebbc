"""Mechanical Turk: send retag batches out, bring consensus answers back.

- client.py    the boto3 ``mturk`` client (sandbox by default), retries with back-off
- selection.py which images a batch sends (pluggable selectors)
- batches.py   build a batch, send it as HTMLQuestion HITs
- cost.py      its price (Decimal, Amazon's fee)
- images.py    how its images reach workers (presigned S3, signed Retag links)
- errors.py    BatchError, and what went wrong in words an admin can act on
- sync.py      assignments, approve/reject rules, consensus per image
- csv_io.py    the requester web UI's CSV batch upload and results download
- review.py    the summary an admin reads, apply, workers' quality and blocks
"""
from .batches import SENDABLE, BatchOptions, build_batch, choices, send_batch  # noqa: F401
from .client import MTurkError, account_balance, make_client, production_allowed  # noqa: F401
from .cost import batch_cost, estimate_cost, fee_per_assignment, fee_rule  # noqa: F401
from .csv_io import decisions_csv, export_csv, import_results_csv, layout_html  # noqa: F401
from .errors import BatchError  # noqa: F401
from .review import (apply_batch, block_worker, review_summary, unblock_worker, worker_history,  # noqa: F401
                     workers_overview)
from .selection import SELECTORS, SelectionError, select, selector  # noqa: F401
from .sync import SYNCABLE, compute_consensus, sync_batch  # noqa: F401
