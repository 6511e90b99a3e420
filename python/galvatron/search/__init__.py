"""Python front of the C++ search: ``galvatron.search``, ``galvatron.estimate``.

The space searched (exact optimum of the cost model over it; see docs/search.md):
pp in ``pp_degrees`` (default: powers of two dividing the world size, up to ``max_pp`` and the
layer count); schedule in ``schedules``; virtual stages (interleaved only); global batch in
``global_batch_size``; micro-batch count in ``num_microbatches`` (default: every divisor of the
batch); the layer split across pipeline ranks (any split with >= 1 layer per rank, or the even
split with ``pp_split="even"``; interleaved schedules use the even split); per layer: tp in
powers of two up to ``max_tp`` (optionally with Megatron-SP), or Ulysses sp up to ``max_sp``,
data-parallel type in ``dp_types``, checkpointing none / selective / full (``allow_checkpoint``:
full, ``allow_selective_checkpoint``: selective, where the profile describes it), adjacent or
strided tp ranks; one
embedding/head strategy (same choices, no checkpointing).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from galvatron import _C
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
                "optimizer_ms", "bubble_ms")
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


def _ints(value: int | Iterable[int] | None, name: str) -> list[int]:
    if value is None:
        return []
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer or a list of integers")
    if isinstance(value, int):
        return [value]
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, a list or a range of integers, got {value!r}") from None
    if not out:
        raise ValueError(f"{name}: empty")
    return out


def _options(world: int, memory_bytes: int, global_batch_size: Any, *, max_tp: int = 8, max_pp: int = 64,
             max_sp: int = 8, dp_types: Sequence[DpType | str] = ("ddp", "zero1", "zero2", "zero3"),
             allow_ulysses: bool = True, allow_megatron_sp: bool = True, allow_checkpoint: bool = True,
             allow_selective_checkpoint: bool = True, allow_strided: bool = True, schedules: Sequence[Schedule | str] = ("1f1b",),
             num_microbatches: int | Iterable[int] | None = None, pp_degrees: Iterable[int] | None = None,
             virtual_stages: int | Iterable[int] = 2, pp_split: str = "searched", num_threads: int = 0) -> Any:
    if pp_split not in ("searched", "even"):
        raise ValueError(f"pp_split: {pp_split!r} is not accepted; accepted: 'searched', 'even'")
    o = _C.SearchOptions()
    o.world_size = world
    o.memory_budget_bytes = memory_bytes
    o.global_batch_sizes = _ints(global_batch_size, "global_batch_size")
    o.num_microbatches = _ints(num_microbatches, "num_microbatches")
    o.pp_degrees = _ints(pp_degrees, "pp_degrees")
    o.virtual_stages = _ints(virtual_stages, "virtual_stages")
    o.max_tp, o.max_pp, o.max_sp = max_tp, max_pp, max_sp
    if isinstance(dp_types, str) or isinstance(schedules, str):
        raise ValueError("dp_types and schedules must be lists, e.g. ['zero2', 'zero3'] and ['1f1b']")
    o.dp_types = [_DP[_enum_value(DpType, d, "dp_types")] for d in dp_types]
    o.schedules = [_SCHED[_enum_value(Schedule, s, "schedules")] for s in schedules]
    o.allow_ulysses, o.allow_megatron_sp = allow_ulysses, allow_megatron_sp
    o.allow_checkpoint, o.allow_strided = allow_checkpoint, allow_strided
    o.allow_selective_checkpoint = allow_selective_checkpoint
    o.search_pp_split = pp_split == "searched"
    o.num_threads = num_threads
    return o


def search(model: ModelProfile, hardware: HardwareProfile, memory_gb: float | None = None,
           global_batch_size: int | Iterable[int] = 8, memory_headroom_gb: float = 0.0,
           uniform_baseline: bool = True, **space: Any) -> SearchResult:
    """Find the plan with the highest predicted throughput that fits in memory.

    ``memory_gb``: per-device budget in GiB (default: the hardware profile's device memory);
    ``memory_headroom_gb`` is kept free on top of the cost model's own overheads. Space options:
    see the module docstring. Raises ``ValueError`` naming the field for bad input, and, when
    nothing fits, with the smallest memory that would fit and the plan that needs it.
    """
    for name, v in (("memory_gb", memory_gb), ("memory_headroom_gb", memory_headroom_gb)):
        if v is not None and not (isinstance(v, (int, float)) and v >= 0):
            raise ValueError(f"{name} must be a number >= 0, got {v!r}")
    device = hardware.device_memory_bytes if memory_gb is None else int(memory_gb * GiB)
    budget = device - int(memory_headroom_gb * GiB)
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


__all__ = ["Prediction", "SearchResult", "estimate", "plan_from_c", "plan_to_c", "search"]
