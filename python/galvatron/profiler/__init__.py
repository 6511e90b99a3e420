"""Profilers that write the profiles the search reads.

- :func:`profile_hardware` (``galvatron profile hardware``): collectives (alpha-beta per op,
  group size and placement), overlap, matmul rate, memory, optimizer step; see
  :mod:`galvatron.profiler.hardware` and :mod:`galvatron.profiler.launch`.
- :func:`profile_model` (``galvatron profile model``): per layer type forward/backward time
  and activation memory of the local shard of each tp / Ulysses degree; see
  :mod:`galvatron.profiler.model`.
- :func:`compare_profiles` (``galvatron profile compare``): two model profiles side by side.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "HardwareOptions": "galvatron.profiler.hardware",
    "profile_hardware": "galvatron.profiler.launch",
    "ModelProfilerOptions": "galvatron.profiler.model",
    "profile_model": "galvatron.profiler.model",
    "compare_profiles": "galvatron.profiler.compare",
}


def __getattr__(name: str) -> Any:  # lazy: `galvatron --help` must not import torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'galvatron.profiler' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
