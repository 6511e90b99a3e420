"""What a search returns: :class:`Prediction` (predicted step time and per-device memory of a
plan, read from the core's result struct) and :class:`SearchResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from galvatron.plan import Plan

GiB = 2**30


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


def prediction_from_c(p: Any, plan: Plan, seq_len: int) -> Prediction:
    """The :class:`Prediction` of ``plan`` from the core's result struct."""
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
