"""Parallel runtime pieces. For now: layout kernels around collectives (:mod:`.layout`)."""
