"""Pieces of the training job (``python -m galvatron.train``): configuration, data,
checkpoints, learning-rate schedule, metrics and process launching."""
