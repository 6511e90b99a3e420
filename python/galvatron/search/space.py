"""The search space: the options of :func:`galvatron.search` (described, with their resource
bounds, in the docstring of :mod:`galvatron.search`) checked, bounded and turned into the
core's ``SearchOptions`` (:func:`search_options`), and the Galvatron-2-executable sub-spaces
(:func:`galvatron2_spaces`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from numbers import Integral
from typing import Any

from galvatron import _C
from galvatron._core_convert import DP_TYPE, SCHEDULE
from galvatron._validate import MAX_BYTES, check_float, check_int, short
from galvatron.plan import DpType, Schedule, _enum_value
from galvatron.search.result import GiB

MAX_LIST_VALUES = 4096  # values of one searched list (batch sizes, micro-batch counts, pp degrees)
MAX_TASKS = 20_000  # tasks of one search (pp x schedule x virtual stages x batch x micro-batches)
MAX_FRONTIER_ENTRIES = 25_000_000  # ~1 GiB of frontiers; the largest benchmark needs 0.7 M


def _ints(value: int | Iterable[int] | None, name: str) -> list[int]:
    """An integer, a list or a range of integers, each 1..2**31-1, at most MAX_LIST_VALUES of
    them; counted before anything is built, so a range of 10**8 values is refused at once."""
    if value is None:
        return []
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer or a list of integers")
    if isinstance(value, int):
        return [check_int(value, name)]
    size = len(value) if isinstance(value, Sized) else None
    if size is not None and size > MAX_LIST_VALUES:
        raise ValueError(f"{name}: {size} values; accepted: at most {MAX_LIST_VALUES} (narrow the range, "
                         "e.g. a step: 1024:65536:1024)")
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be an integer, a list or a range of integers, got {short(value)}")
    out = []
    for v in value:
        if len(out) == MAX_LIST_VALUES:
            raise ValueError(f"{name}: more than {MAX_LIST_VALUES} values; narrow the range")
        out.append(check_int(int(v) if isinstance(v, Integral) and not isinstance(v, bool) else v,
                             f"{name}[{len(out)}]"))
    if not out:
        raise ValueError(f"{name}: empty")
    return out


def memory_bytes(memory_gb: Any, name: str) -> int:
    """GiB (a finite number, 0 to 2**20) -> bytes; inf, NaN, negatives and non-numbers refused."""
    return int(check_float(memory_gb, name, 0.0, MAX_BYTES / GiB) * GiB)


def search_options(world: int, memory_bytes: int, global_batch_size: Any, *, max_tp: int = 8, max_pp: int = 64,
             max_sp: int = 8, dp_types: Sequence[DpType | str] = ("ddp", "zero1", "zero2", "zero3"),
             allow_ulysses: bool = True, allow_megatron_sp: bool = True, allow_checkpoint: bool = True,
             allow_selective_checkpoint: bool = True, allow_strided: bool = True, megatron_sp_only: bool = False,
             schedules: Sequence[Schedule | str] = ("1f1b",),
             num_microbatches: int | Iterable[int] | None = None, pp_degrees: Iterable[int] | None = None,
             virtual_stages: int | Iterable[int] = 2, pp_split: str = "searched", num_threads: int = 0,
             max_tasks: int = MAX_TASKS, max_frontier_entries: int = MAX_FRONTIER_ENTRIES) -> Any:
    if pp_split not in ("searched", "even"):
        raise ValueError(f"pp_split: {pp_split!r} is not accepted; accepted: 'searched', 'even'")
    o = _C.SearchOptions()
    o.world_size = world
    o.memory_budget_bytes = memory_bytes
    o.global_batch_sizes = _ints(global_batch_size, "global_batch_size")
    o.num_microbatches = _ints(num_microbatches, "num_microbatches")
    o.pp_degrees = _ints(pp_degrees, "pp_degrees")
    o.virtual_stages = _ints(virtual_stages, "virtual_stages")
    o.max_tp, o.max_pp, o.max_sp = (check_int(v, k) for k, v in (("max_tp", max_tp), ("max_pp", max_pp),
                                                                  ("max_sp", max_sp)))
    if isinstance(dp_types, str) or isinstance(schedules, str):
        raise ValueError("dp_types and schedules must be lists, e.g. ['zero2', 'zero3'] and ['1f1b']")
    o.dp_types = [DP_TYPE[_enum_value(DpType, d, "dp_types")] for d in dp_types]
    o.schedules = [SCHEDULE[_enum_value(Schedule, s, "schedules")] for s in schedules]
    o.allow_ulysses, o.allow_megatron_sp = allow_ulysses, allow_megatron_sp
    o.allow_checkpoint, o.allow_strided = allow_checkpoint, allow_strided
    o.allow_selective_checkpoint = allow_selective_checkpoint
    o.megatron_sp_only = megatron_sp_only
    o.search_pp_split = pp_split == "searched"
    o.num_threads = check_int(num_threads, "num_threads", 0, 4096)
    o.max_tasks = check_int(max_tasks, "max_tasks", 0, 2**40)
    o.max_frontier_entries = check_int(max_frontier_entries, "max_frontier_entries", 0, 2**40)
    return o


_G2_DEFAULT_DP = (DpType.DDP, DpType.ZERO2)  # Galvatron-2's default_dp_type values


def galvatron2_spaces(space: dict[str, Any]) -> list[dict[str, Any]]:
    """The sub-spaces whose union is the Galvatron-2-executable part of ``space``: per default
    dp type (ddp, zero2; each with ZeRO-3 when allowed) and Megatron-SP switch (off, on)."""
    fixed = {"pp_split": "even", "allow_strided": False}
    for key, value in fixed.items():
        if key in space and space[key] != value:
            raise ValueError(f"{key}={space[key]!r} is outside what Galvatron-2 runs "
                             f"(galvatron2_compatible needs {key}={value!r})")
    if space.get("megatron_sp_only"):
        raise ValueError("megatron_sp_only: galvatron2_compatible searches the Megatron-SP switch itself")
    schedules = [_enum_value(Schedule, s, "schedules") for s in space.get("schedules", ("1f1b",))]
    schedules = [s for s in schedules if s is not Schedule.INTERLEAVED_1F1B]
    if not schedules:
        raise ValueError("schedules: Galvatron-2 runs gpipe and 1f1b only (galvatron2_compatible)")
    dp_types = [_enum_value(DpType, d, "dp_types") for d in space.get("dp_types", tuple(DpType))]
    zero3 = [DpType.ZERO3] if DpType.ZERO3 in dp_types else []
    defaults = [d for d in _G2_DEFAULT_DP if d in dp_types] or [None]
    if defaults == [None] and not zero3:
        raise ValueError("dp_types: Galvatron-2 runs ddp, zero2 and zero3 only (galvatron2_compatible)")
    sp_switch = [False, True] if space.get("allow_megatron_sp", True) else [False]
    out = []
    for default in defaults:
        for sp_on in sp_switch:
            sub = {**space, **fixed, "schedules": schedules,
                   "dp_types": ([default] if default else []) + zero3,
                   "allow_megatron_sp": sp_on, "megatron_sp_only": sp_on,
                   "allow_selective_checkpoint": False}  # its format: checkpoint 0 / 1 (full)
            out.append(sub)
    return out
