"""The public entry points: :func:`search` (the plan with the highest predicted throughput that
fits in memory) and :func:`estimate` (the prediction of any plan). The space options are
described in the docstring of :mod:`galvatron.search`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from galvatron import _C
from galvatron._core_convert import plan_from_c, plan_to_c
from galvatron.plan import Plan
from galvatron.profiles.hardware import HardwareProfile
from galvatron.profiles.model import ModelProfile
from galvatron.search.result import GiB, Prediction, SearchResult, prediction_from_c
from galvatron.search.space import galvatron2_spaces, memory_bytes, search_options


def estimate(plan: Plan, model: ModelProfile, hardware: HardwareProfile) -> Prediction:
    """Predicted time and memory of any plan (for example a hand-written one)."""
    plan.validate(world_size=hardware.world_size, num_layers=model.num_layers)
    p = _C.evaluate_plan(model.to_tables(), hardware.to_tables(), plan_to_c(plan))
    return prediction_from_c(p, plan, model.seq_len)


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


def _search_space(model: ModelProfile, hardware: HardwareProfile, memory_gb: float | None,
                  global_batch_size: int | Iterable[int], memory_headroom_gb: float,
                  uniform_baseline: bool, **space: Any) -> SearchResult:
    device = hardware.device_memory_bytes if memory_gb is None else memory_bytes(memory_gb, "memory_gb")
    budget = device - memory_bytes(memory_headroom_gb, "memory_headroom_gb")
    if budget <= 0:
        raise ValueError(f"memory_gb - memory_headroom_gb must be > 0 (got {device / GiB:.2f} GiB - "
                         f"{memory_headroom_gb} GiB)")
    opts = search_options(hardware.world_size, budget, global_batch_size, **space)
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
    pred = prediction_from_c(out.prediction, plan, model.seq_len)
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
