"""Python front of the C++ search: ``galvatron.search``, ``galvatron.estimate``.

The space searched (exact optimum of the cost model over it; see docs/search.md):
pp in ``pp_degrees`` (default: every divisor of the world size, up to ``max_pp`` and the
layer count); schedule in ``schedules``; virtual stages (interleaved only); global batch in
``global_batch_size``; micro-batch count in ``num_microbatches`` (default: every divisor of the
batch); the layer split across pipeline ranks (any split with >= 1 layer per rank, or the even
split with ``pp_split="even"``; interleaved schedules use the even split); per layer: tp any
divisor of the stage size up to ``max_tp`` (optionally with Megatron-SP), or Ulysses sp (any
divisor) up to ``max_sp`` -- where the model allows the degree (it divides the head counts and
the sequence, and the profile has the degree),
data-parallel type in ``dp_types``, checkpointing none / selective / full (``allow_checkpoint``:
full, ``allow_selective_checkpoint``: selective, where the profile describes it), adjacent or
strided tp ranks; one
embedding/head strategy (same choices, no checkpointing).

``galvatron2_compatible=True`` restricts the space to what Galvatron-2's runtime executes, so
the result always exports to its plan format: one global Megatron-SP switch (searched both
ways: every tp > 1 layer with it, or none), one default dp type (ddp or zero2, each searched)
plus ZeRO-3, the even layer split, adjacent ranks, and the GPipe or 1F1B schedule.

Resource bounds (refused with ``ValueError`` naming the numbers and how to narrow the space):
at most ``MAX_LIST_VALUES`` values per list option, ``max_tasks`` tasks (counted before any
work) and ``max_frontier_entries`` Pareto-frontier entries in total (bounds memory and time).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

from galvatron import _C
from galvatron._validate import MAX_BYTES, check_float, check_int, short
from galvatron.plan import (
    Checkpoint,
    DpType,
    LayerStrategy,
    Plan,
    Precision,
    Schedule,
    SpKind,
    _enum_value,
)
from galvatron.profiles.hardware import HardwareProfile
from galvatron.profiles.model import ModelProfile

GiB = 2**30

_DP = {DpType.DDP: _C.DpType.DDP, DpType.ZERO1: _C.DpType.ZERO1, DpType.ZERO2: _C.DpType.ZERO2,
       DpType.ZERO3: _C.DpType.ZERO3}
_SP = {SpKind.NONE: _C.SpKind.NONE, SpKind.MEGATRON: _C.SpKind.MEGATRON, SpKind.ULYSSES: _C.SpKind.ULYSSES}
_SCHED = {Schedule.GPIPE: _C.Schedule.GPIPE, Schedule.ONE_F_ONE_B: _C.Schedule.ONE_F_ONE_B,
          Schedule.INTERLEAVED_1F1B: _C.Schedule.INTERLEAVED_1F1B}
_CKPT = {Checkpoint.NONE: _C.Checkpoint.NONE, Checkpoint.SELECTIVE: _C.Checkpoint.SELECTIVE,
         Checkpoint.FULL: _C.Checkpoint.FULL}
_CKPT_BACK = {v: k for k, v in _CKPT.items()}
_DP_BACK = {v: k for k, v in _DP.items()}
_SP_BACK = {v: k for k, v in _SP.items()}
_SCHED_BACK = {v: k for k, v in _SCHED.items()}


def _strategy_to_c(s: LayerStrategy) -> Any:
    c = _C.Strategy()
    c.tp, c.sp, c.sp_kind, c.dp_type = s.tp, s.sp, _SP[s.sp_kind], _DP[s.dp_type]
    c.checkpoint, c.tp_consecutive = _CKPT[s.checkpoint], s.tp_consecutive
    return c


def _strategy_from_c(c: Any) -> LayerStrategy:
    return LayerStrategy(tp=c.tp, sp=c.sp, sp_kind=_SP_BACK[c.sp_kind], dp_type=_DP_BACK[c.dp_type],
                         checkpoint=_CKPT_BACK[c.checkpoint], tp_consecutive=c.tp_consecutive)


def plan_to_c(plan: Plan) -> Any:
    p = _C.PlanSpec()
    p.world_size, p.pp, p.schedule = plan.world_size, plan.pp, _SCHED[plan.schedule]
    p.virtual_stages, p.num_microbatches = plan.virtual_stages, plan.num_microbatches
    p.global_batch_size, p.stage_layers = plan.global_batch_size, list(plan.stage_layers)
    p.layers = [_strategy_to_c(s) for s in plan.layers]
    p.embedding = _strategy_to_c(plan.embedding)
    return p


def plan_from_c(p: Any, precision: Precision | str) -> Plan:
    return Plan(world_size=p.world_size, layers=tuple(_strategy_from_c(s) for s in p.layers), pp=p.pp,
                stage_layers=tuple(p.stage_layers), schedule=_SCHED_BACK[p.schedule],
                virtual_stages=p.virtual_stages, num_microbatches=p.num_microbatches,
                global_batch_size=p.global_batch_size, embedding=_strategy_from_c(p.embedding),
                precision=precision)


@dataclass(frozen=True)
class Prediction:
    """Predicted step time and per-device memory of a plan."""

    step_time_s: float
    samples_per_s: float
    tokens_per_s: float
    stage_memory: tuple[dict[str, int], ...]  # per pipeline rank: bytes per component + total
    stage_time_ms: tuple[float, ...]
    breakdown_ms: dict[str, float]  # the critical rank's step: compute, comms, bubble, ...
    layer_timing_ms: tuple[dict[str, float], ...]
    critical_stage: int
    # every pipeline rank's step as breakdown_ms, plus fwd_ms / recompute_ms (parts of
    # compute_ms); grad_sync_ms is the exposed per-step data-parallel sync, optimizer_ms the step
    stage_breakdown_ms: tuple[dict[str, float], ...] = ()

    @property
    def max_peak_memory_bytes(self) -> int:
        return max(m["total_bytes"] for m in self.stage_memory)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_time_s": self.step_time_s, "samples_per_s": self.samples_per_s,
            "tokens_per_s": self.tokens_per_s, "max_peak_memory_bytes": self.max_peak_memory_bytes,
            "stage_memory": [dict(m) for m in self.stage_memory], "stage_time_ms": list(self.stage_time_ms),
            "breakdown_ms": dict(self.breakdown_ms), "critical_stage": self.critical_stage,
        }

    def summary(self) -> str:
        lines = [f"step {self.step_time_s * 1e3:.1f} ms, {self.samples_per_s:.2f} samples/s, "
                 f"{self.tokens_per_s:,.0f} tokens/s, peak {self.max_peak_memory_bytes / GiB:.2f} GiB/device"]
        parts = ", ".join(f"{k.removesuffix('_ms')} {v:.1f}" for k, v in self.breakdown_ms.items() if v > 0)
        lines.append(f"time on the critical stage {self.critical_stage} (ms): {parts}")
        for r, m in enumerate(self.stage_memory):
            comp = ", ".join(f"{k.removesuffix('_bytes')} {v / GiB:.2f}" for k, v in m.items()
                             if k != "total_bytes" and v > 0)
            lines.append(f"stage {r} memory {m['total_bytes'] / GiB:.2f} GiB: {comp}")
        return "\n".join(lines)


_MEM_FIELDS = ("param_bytes", "grad_bytes", "optimizer_bytes", "activation_bytes", "transient_bytes",
               "buffer_bytes", "overhead_bytes", "total_bytes")
_TIME_FIELDS = ("compute_ms", "tp_comm_ms", "sp_comm_ms", "dp_comm_ms", "p2p_ms", "redistribution_ms",
                "grad_sync_ms", "optimizer_ms", "bubble_ms")
_STAGE_TIME_FIELDS = (*_TIME_FIELDS, "fwd_ms", "recompute_ms")
_LAYER_FIELDS = ("fwd_ms", "bwd_ms", "tp_comm_ms", "sp_comm_ms", "dp_comm_ms", "redistribution_ms", "per_step_ms")


def _prediction(p: Any, plan: Plan, seq_len: int) -> Prediction:
    step_s = p.step_time_ms / 1e3
    sps = plan.global_batch_size / step_s if step_s > 0 else float("inf")
    return Prediction(
        step_time_s=step_s, samples_per_s=sps, tokens_per_s=sps * seq_len,
        stage_memory=tuple({f: int(getattr(m, f)) for f in _MEM_FIELDS} for m in p.stage_memory),
        stage_time_ms=tuple(p.stage_time_ms),
        breakdown_ms={f: float(getattr(p.breakdown, f)) for f in _TIME_FIELDS},
        layer_timing_ms=tuple({f: float(getattr(t, f)) for f in _LAYER_FIELDS} for t in p.layer_timing),
        critical_stage=p.critical_stage,
        stage_breakdown_ms=tuple({f: float(getattr(b, f)) for f in _STAGE_TIME_FIELDS}
                                 for b in p.stage_breakdown),
    )


def estimate(plan: Plan, model: ModelProfile, hardware: HardwareProfile) -> Prediction:
    """Predicted time and memory of any plan (for example a hand-written one)."""
    plan.validate(world_size=hardware.world_size, num_layers=model.num_layers)
    p = _C.evaluate_plan(model.to_tables(), hardware.to_tables(), plan_to_c(plan))
    return _prediction(p, plan, model.seq_len)


@dataclass
class SearchResult:
    plan: Plan
    predicted: Prediction
    search_time_s: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)
    best_uniform: SearchResult | None = None

    @property
    def speedup_over_uniform(self) -> float | None:
        if self.best_uniform is None:
            return None
        return self.predicted.samples_per_s / self.best_uniform.predicted.samples_per_s


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


def _memory_bytes(memory_gb: Any, name: str) -> int:
    """GiB (a finite number, 0 to 2**20) -> bytes; inf, NaN, negatives and non-numbers refused."""
    return int(check_float(memory_gb, name, 0.0, MAX_BYTES / GiB) * GiB)


def _options(world: int, memory_bytes: int, global_batch_size: Any, *, max_tp: int = 8, max_pp: int = 64,
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
    o.dp_types = [_DP[_enum_value(DpType, d, "dp_types")] for d in dp_types]
    o.schedules = [_SCHED[_enum_value(Schedule, s, "schedules")] for s in schedules]
    o.allow_ulysses, o.allow_megatron_sp = allow_ulysses, allow_megatron_sp
    o.allow_checkpoint, o.allow_strided = allow_checkpoint, allow_strided
    o.allow_selective_checkpoint = allow_selective_checkpoint
    o.megatron_sp_only = megatron_sp_only
    o.search_pp_split = pp_split == "searched"
    o.num_threads = check_int(num_threads, "num_threads", 0, 4096)
    o.max_tasks = check_int(max_tasks, "max_tasks", 0, 2**40)
    o.max_frontier_entries = check_int(max_frontier_entries, "max_frontier_entries", 0, 2**40)
    return o


def search(model: ModelProfile, hardware: HardwareProfile, memory_gb: float | None = None,
           global_batch_size: int | Iterable[int] = 8, memory_headroom_gb: float = 0.0,
           uniform_baseline: bool = True, galvatron2_compatible: bool = False, **space: Any) -> SearchResult:
    """Find the plan with the highest predicted throughput that fits in memory.

    ``memory_gb``: per-device budget in GiB (default: the hardware profile's device memory);
    ``memory_headroom_gb`` is kept free on top of the cost model's own overheads. Space options:
    see the module docstring (``galvatron2_compatible``: only plans Galvatron-2's runtime runs).
    Raises ``ValueError`` naming the field for bad input, and, when nothing fits, with the
    smallest memory that would fit and the plan that needs it.
    """
    if galvatron2_compatible:
        best: SearchResult | None = None
        first_error: ValueError | None = None
        total_s, stats = 0.0, {}
        for sub in galvatron2_spaces(space):  # ties keep the earlier space (listed order)
            try:
                r = _search_space(model, hardware, memory_gb, global_batch_size, memory_headroom_gb,
                                  uniform_baseline, **sub)
            except ValueError as e:
                if "no plan in the search space fits" not in str(e):
                    raise
                first_error = first_error or e
                continue
            total_s += r.search_time_s
            stats = {k: stats.get(k, 0) + v for k, v in r.stats.items()}
            if best is None or r.predicted.samples_per_s > best.predicted.samples_per_s:
                uniform = best.best_uniform if best is not None else None
                best = r
                best.best_uniform = _better(uniform, r.best_uniform)
            else:
                best.best_uniform = _better(best.best_uniform, r.best_uniform)
        if best is None:
            assert first_error is not None
            raise first_error
        best.search_time_s, best.stats = total_s, stats
        return best
    return _search_space(model, hardware, memory_gb, global_batch_size, memory_headroom_gb,
                         uniform_baseline, **space)


def _better(a: SearchResult | None, b: SearchResult | None) -> SearchResult | None:
    if a is None or (b is not None and b.predicted.samples_per_s > a.predicted.samples_per_s):
        return b
    return a


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


def _search_space(model: ModelProfile, hardware: HardwareProfile, memory_gb: float | None,
                  global_batch_size: int | Iterable[int], memory_headroom_gb: float,
                  uniform_baseline: bool, **space: Any) -> SearchResult:
    device = hardware.device_memory_bytes if memory_gb is None else _memory_bytes(memory_gb, "memory_gb")
    budget = device - _memory_bytes(memory_headroom_gb, "memory_headroom_gb")
    if budget <= 0:
        raise ValueError(f"memory_gb - memory_headroom_gb must be > 0 (got {device / GiB:.2f} GiB - "
                         f"{memory_headroom_gb} GiB)")
    opts = _options(hardware.world_size, budget, global_batch_size, **space)
    mt, ht = model.to_tables(), hardware.to_tables()
    t0 = time.perf_counter()
    out = _C.search(mt, ht, opts)
    elapsed = time.perf_counter() - t0
    if not out.found:
        raise ValueError(_infeasible_message(out, model, budget, memory_headroom_gb))
    result = _result(out, model, elapsed)
    if uniform_baseline:
        opts.uniform_only = True
        t1 = time.perf_counter()
        u = _C.search(mt, ht, opts)
        if u.found:
            result.best_uniform = _result(u, model, time.perf_counter() - t1)
    return result


def _result(out: Any, model: ModelProfile, elapsed: float) -> SearchResult:
    plan = plan_from_c(out.plan, model.precision)
    pred = _prediction(out.prediction, plan, model.seq_len)
    plan = plan.replace(predicted=pred.to_dict())
    s = out.stats
    stats = {"tasks": s.tasks, "strategies": s.strategies, "dp_sweeps": s.dp_sweeps,
             "frontier_entries": s.frontier_entries, "plans_evaluated": s.plans_evaluated}
    return SearchResult(plan=plan, predicted=pred, search_time_s=elapsed, stats=stats)


def _infeasible_message(out: Any, model: ModelProfile, budget: int, headroom_gb: float) -> str:
    msg = f"memory_gb: no plan in the search space fits in {budget / GiB:.2f} GiB per device"
    if out.min_feasible_bytes > 0:
        need = out.min_feasible_bytes / GiB + headroom_gb
        plan = plan_from_c(out.min_memory_plan, model.precision)
        msg += (f"; the smallest that would fit needs memory_gb >= {need:.2f}"
                + (f" (with {headroom_gb} GiB headroom)" if headroom_gb else "")
                + f", with this plan:\n{plan.summary()}")
    else:
        msg += "; no plan is valid at all for these batch sizes and degrees (check global_batch_size)"
    return msg


__all__ = ["Prediction", "SearchResult", "estimate", "galvatron2_spaces", "plan_from_c", "plan_to_c", "search"]
