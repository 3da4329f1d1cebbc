"""Dataset import: images and their labels from a folder, a zip archive, a CSV manifest
or an S3 prefix, as an idempotent sync.

Identity is ``(project, key)``: the key is the image's path inside the source (for
manifests, the URI as written, normalised). Importing the same source again changes
nothing; a label the source changed becomes an import LabelEvent; an image gone from
the source becomes ``missing`` (never deleted: its history stays), and comes back as
``ok`` when it reappears. A split is given once and kept for life. One bad row never
stops the rest: it becomes a problem ``{"row", "uri", "reason"}`` on the job.

:func:`start_import` validates and queues (the web page and API call it);
:func:`run_import` does the work in the calling process (the Celery task, commands,
the demo loader and the tests call it).

The modules, in the order a job meets them:

- :mod:`.jobs`: start, run, claim, stale takeover (the job's life);
- :mod:`.sources`: which source a job names, checked against the allowed roots;
- :mod:`.entries`: what a source yields (one entry per image) and the folder layout rules;
- :mod:`.folders`, :mod:`.archives`, :mod:`.csv_manifest`: the listers (folder and S3
  prefix, zip with its safety checks, CSV manifest);
- :mod:`.decoding`: reading, hashing and decoding in threads;
- :mod:`.writing`: images, labels and events written in chunks, then the missing sweep;
- :mod:`.progress`: the job's counters, problems and heartbeat.
"""
from .archives import safe_extract, unsafe_member
from .csv_manifest import MANIFEST_COLUMNS, manifest_key
from .decoding import worker_threads
from .entries import ImportRefused
from .jobs import claim, enqueue_import, run_import, start_import, take_over_stale_imports
from .progress import MAX_PROBLEMS, OUTCOMES, Superseded
from .sources import guess_kind, open_source
from .writing import assign_split

__all__ = ["ImportRefused", "MANIFEST_COLUMNS", "MAX_PROBLEMS", "OUTCOMES", "Superseded", "assign_split", "claim", "enqueue_import",
           "guess_kind", "manifest_key", "open_source", "run_import", "safe_extract", "start_import",
           "take_over_stale_imports", "unsafe_member", "worker_threads"]
