"""Suspects: images whose label is probably wrong, found from a finished training run.

One module per part, each named for what it holds:

- ``config``: the run's fields, defaults and their check;
- ``pipeline``: start, the K fold runs, advance, score, and what the run page polls;
- ``results``: storing the scores as suspects, clusters, members, near-duplicate pairs;
- ``annotator_queue``: the keyboard queue with its leases, resolving a suspect, counts;
- ``clusters``: each class's core and outliers, group retags;
- ``exclusions``: images left out of the next trainings, and put back.

Callers use the package (``from labeling.services import suspects; suspects.queue(sr)``);
the names below are its public face. (Near duplicates, the quality figures and automatic
cleaning are capabilities of their own, with their own pages: services.duplicates,
services.suspect_quality, services.autoclean.)
"""
from .annotator_queue import (ACTIONS, ChangedSinceDecision, SuspectResolved, last_decision, undo_decision, lease_next, lease_seconds, open_count,
                              open_counts, queue, queue_counts, release, resolve, stale_open, throughput)
from .clusters import OUTLIERS_PER_PAGE, class_clusters, class_figures, class_summary, retag_group, typical_images
from .config import DEFAULTS, EMBEDDINGS, SuspectError, validate_config
from .exclusions import exclude_images, exclude_outliers, exclusion_summary, restore_exclusions
from .pipeline import (advance, advance_open_runs, base_config, execute_fold, execute_here, latest_done,
                       prepare_folds, score_suspect_run, start_suspect_run, status)
from .results import cluster_cuts, cut_shown, cuts_by_name, reason_text, store_results, write_scores

__all__ = ["ChangedSinceDecision", "last_decision", "undo_decision", "ACTIONS", "DEFAULTS", "EMBEDDINGS", "OUTLIERS_PER_PAGE", "class_figures",
           "open_count", "open_counts", "stale_open", "SuspectError", "SuspectResolved", "advance", "advance_open_runs",
           "base_config", "class_clusters", "class_summary", "cluster_cuts", "cut_shown", "cuts_by_name", "exclude_images",
           "exclude_outliers", "exclusion_summary", "execute_fold", "execute_here", "latest_done", "lease_next",
           "lease_seconds", "prepare_folds", "queue", "queue_counts", "reason_text", "release",
           "resolve", "restore_exclusions", "retag_group", "score_suspect_run", "start_suspect_run", "status",
           "store_results", "throughput", "typical_images", "validate_config", "write_scores"]
