"""Retag's ML core: training, evaluation, prediction and embeddings. Knows nothing of Django."""
