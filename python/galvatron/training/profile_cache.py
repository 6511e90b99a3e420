"""The training job's measured model profiles, cached by what they depend on.

A quick measurement of a small model on this CPU takes seconds and is noisy; measuring it
again for every run made the searched plan change from run to run. The profile is cached under
``$GALVATRON_CACHE_DIR`` (default ``~/.cache/galvatron``) as ``model-<key>.json``, the key
hashing the machine, the torch version, the model (flavour and overrides), the sequence length,
the dtype and the process count (the largest shard degree measured and how many processes share
the cores). A run keeps a copy in its run directory (``model_profile.json``) as its record.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def model_cache_key(model: str, overrides: dict[str, Any], seq_len: int | None, dtype: str, world: int,
                    max_degree: int, share: float) -> str:
    import torch

    from galvatron.profiler.launch import PROFILER_METHOD, _device_description

    fields = {"device": _device_description(torch.cuda.is_available()), "torch": torch.__version__,
              "model": model, "overrides": overrides, "seq_len": seq_len, "dtype": dtype, "world": world,
              "max_degree": max_degree, "share": share, "method": PROFILER_METHOD}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_model_path(key: str) -> str:
    from galvatron.profiler.launch import cache_dir

    return os.path.join(cache_dir(), f"model-{key}.json")


def load_cached(key: str) -> Any | None:
    """The cached profile for ``key``, or None (also for an unreadable file: it is re-measured)."""
    import galvatron

    path = cached_model_path(key)
    if not os.path.exists(path):
        return None
    try:
        return galvatron.ModelProfile.load(path)
    except ValueError:
        return None


def store(key: str, profile: Any) -> str | None:
    """Save ``profile`` under ``key``; returns the path, or None where the cache is not writable."""
    path = cached_model_path(key)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        profile.save(path)
    except OSError:
        return None
    return path
