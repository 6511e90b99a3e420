"""Shared checks for values read from files, flags and requests: each names the field and what
is accepted, and raises ``ValueError`` (never ``TypeError``/``OverflowError``), so a hostile or
damaged value becomes one clear line.

The bounds keep every value inside what the C++ core stores (``int32`` degrees and batch sizes,
``int64`` bytes) and what is physically meaningful; they are documented in docs/security.md.
"""

from __future__ import annotations

import math
from typing import Any

INT32_MAX = 2**31 - 1
MAX_PARAMS = 2**48  # parameters of one layer type / the embedding (281 T)
MAX_BYTES = 2**50  # device memory, buffers (1 PiB)
MAX_BYTES_PER_SAMPLE = 2**44  # activations of one sample of one layer (16 TiB)
MAX_MS = 1e9  # any one measured/predicted time in milliseconds (11.6 days)
MAX_SEQ_LEN = 2**31 - 1
MAX_LAYERS = 100_000
MAX_WORLD = 2**20  # devices


def short(value: Any, limit: int = 60) -> str:
    """``repr`` for error messages, cut to ``limit`` characters (safe on huge/deep values)."""
    if isinstance(value, (list, tuple, dict)):
        kind = type(value).__name__
        return f"a {kind} of {len(value)} item(s)" if len(value) > 8 else _cut(_safe_repr(value), limit)
    return _cut(_safe_repr(value), limit)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except (RecursionError, ValueError):  # deep nesting; int too large to print
        return f"<{type(value).__name__}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(value: Any, where: str, lo: int = 1, hi: int = INT32_MAX) -> int:
    """An integer (not a bool, not a float) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where} must be an integer from {lo} to {hi}, got {short(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{where} must be an integer from {lo} to {hi}, got {_big(value)}")
    return value


def check_int_like(value: Any, where: str, lo: int = 1, hi: int = INT32_MAX) -> int:
    """Like :func:`check_int` but also takes a decimal string or an integral float (formats
    written by other tools, e.g. Galvatron-2's ``"chunks": "8"``); 7.9, NaN, true are refused."""
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) <= 20:
        value = int(value.strip())
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer() and abs(value) <= 2**63:
        value = int(value)
    return check_int(value, where, lo, hi)


def check_float(value: Any, where: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """A finite number (int or float, not a bool) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number in {interval}, got {short(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{where} must be a number in {interval}, got {_big(value)}") from None
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise ValueError(f"{where} must be a finite number in {interval}, got {_big(value)}")
    return v


def check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be true or false, got {short(value)}")
    return value


def check_str(value: Any, where: str, max_len: int = 4096) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string, got {short(value)}")
    if len(value) > max_len:
        raise ValueError(f"{where} must be at most {max_len} characters, got {len(value)}")
    return value


def check_dict(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object (mapping), got {short(value)}")
    return value


def check_list(value: Any, where: str, max_len: int = MAX_LAYERS) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list, got {short(value)}")
    if len(value) > max_len:
        raise ValueError(f"{where} has {len(value)} entries; accepted: at most {max_len}")
    return list(value)


def _big(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        return f"an integer of {value.bit_length()} bits"
    return short(value)
