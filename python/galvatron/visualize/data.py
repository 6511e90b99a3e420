"""The numbers a report shows, as one JSON-compatible dict (embedded in the HTML as-is).

``report_data`` evaluates a plan with :func:`galvatron.estimate`, finds or evaluates the
baseline (the best uniform plan under the same batch size and memory budget, or a given
plan), and attaches measured metrics from a training run. Every number the page draws comes
from this dict, so tests compare it (and the drawn elements) with ``galvatron.estimate``.

Metrics file (``--metrics run/metrics.jsonl``): one JSON object per line with at least
``step`` and ``loss``; optional ``step_time_s`` (or ``step_time_ms``), ``peak_memory_bytes``
(an integer: the largest over ranks, or a list: one per rank), ``peak_memory_bytes_per_rank``
(a list) and ``rank`` (when each rank writes its own lines). The first ``warmup_steps`` steps
are left out of the measured step time (median).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from typing import Any

import galvatron
from galvatron.plan import Plan, SpKind
from galvatron.profiles import HardwareProfile, ModelProfile

DATA_VERSION = 1
MEM_COMPONENTS = ("param_bytes", "grad_bytes", "optimizer_bytes", "activation_bytes", "transient_bytes",
                  "buffer_bytes", "overhead_bytes")
TIME_COMPONENTS = ("compute_ms", "tp_comm_ms", "sp_comm_ms", "dp_comm_ms", "p2p_ms", "bubble_ms",
                   "redistribution_ms", "optimizer_ms")


def plan_view(plan: Plan, model: ModelProfile, hardware: HardwareProfile, label: str,
              view_id: str = "plan") -> dict[str, Any]:
    """One plan with its prediction: everything the memory, strategy and time charts draw."""
    pred = galvatron.estimate(plan, model, hardware)
    plan_dict = plan.to_dict()
    plan_dict.pop("predicted", None)
    prediction = pred.to_dict()
    prediction["layer_timing_ms"] = [dict(t) for t in pred.layer_timing_ms]
    return {
        "id": view_id,
        "label": label,
        "plan": plan_dict,
        "summary": plan.replace(predicted=None).summary(),
        "prediction": prediction,
        "stage_of_layer": plan.stage_of_layer(),
        "dp_degree": [plan.dp_degree(s) for s in plan.layers],
        "embedding_dp_degree": plan.dp_degree(plan.embedding),
        "layer_labels": [strategy_label(s) for s in plan.layers],
    }


def strategy_label(s: Any) -> dict[str, str]:
    """The strategy map's category of each row for one layer strategy."""
    sp = "none"
    if s.sp_kind is SpKind.MEGATRON:
        sp = "megatron"
    elif s.sp_kind is SpKind.ULYSSES:
        sp = f"ulysses{s.sp}"
    return {"tp": f"tp{s.tp}" + ("" if s.tp_consecutive or s.tp == 1 else " strided"), "sp": sp,
            "dp_type": s.dp_type.value, "ckpt": {"none": "no ckpt", "full": "ckpt"}.get(s.checkpoint.value, "selective ckpt")}


def report_data(plan: Plan, model: ModelProfile, hardware: HardwareProfile, *,
                memory_budget_bytes: int | None = None, baseline: Plan | str | None = "search",
                metrics: list[dict[str, Any]] | None = None, warmup_steps: int = 1,
                plan_label: str = "plan", baseline_label: str = "baseline",
                title: str | None = None) -> dict[str, Any]:
    """All numbers of a report. ``baseline``: a Plan, ``"search"`` (best uniform plan), or None."""
    budget = int(memory_budget_bytes or hardware.device_memory_bytes)
    main = plan_view(plan, model, hardware, plan_label)
    base, note = None, ""
    if isinstance(baseline, Plan):
        base = plan_view(baseline, model, hardware, baseline_label, "baseline")
    elif baseline == "search":
        base, note = _best_uniform(plan, model, hardware, budget)
    speedup = None
    if base is not None:
        speedup = main["prediction"]["samples_per_s"] / base["prediction"]["samples_per_s"]
    return {
        "version": DATA_VERSION,
        "generator": f"galvatron {galvatron.__version__}",
        "title": title or f"{model.model} on {hardware.num_nodes}x{hardware.gpus_per_node} {hardware.name}",
        "model": {"name": model.model, "seq_len": model.seq_len, "precision": model.precision,
                  "num_layers": model.num_layers, "layer_types": [lt.name for lt in model.layer_types],
                  "layer_type_of": list(model.layer_type_of)},
        "hardware": {"name": hardware.name, "num_nodes": hardware.num_nodes,
                     "gpus_per_node": hardware.gpus_per_node, "world_size": hardware.world_size,
                     "device_memory_bytes": hardware.device_memory_bytes},
        "memory_budget_bytes": budget,
        "plan": main,
        "baseline": base,
        "baseline_note": note,
        "speedup": speedup,
        "measured": measured_summary(metrics, plan, main["prediction"], warmup_steps) if metrics else None,
    }


def _best_uniform(plan: Plan, model: ModelProfile, hardware: HardwareProfile,
                  budget: int) -> tuple[dict[str, Any] | None, str]:
    try:
        res = galvatron.search(model, hardware, memory_gb=budget / 2**30,
                               global_batch_size=plan.global_batch_size,
                               schedules=(plan.schedule.value,))
    except ValueError as e:
        return None, f"no uniform plan found: {str(e).splitlines()[0]}"
    if res.best_uniform is None:
        return None, "no uniform plan fits the memory budget"
    view = plan_view(res.best_uniform.plan, model, hardware, "best uniform plan", "baseline")
    return view, (f"best uniform plan found by galvatron.search (global batch {plan.global_batch_size}, "
                  f"budget {budget / 2**30:.2f} GiB, schedule {plan.schedule.value})")


def load_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a metrics JSONL file; raise ValueError naming the line for bad input."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise ValueError(f"--metrics {os.fspath(path)}: cannot read: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{os.fspath(path)}:{n}: not JSON: {e.msg}") from None
        except (RecursionError, ValueError) as e:  # nested too deeply; a 5000-digit integer
            raise ValueError(f"{os.fspath(path)}:{n}: not usable JSON: {type(e).__name__}") from None
        if not isinstance(row, dict) or "step" not in row or "loss" not in row:
            raise ValueError(f"{os.fspath(path)}:{n}: each line needs an object with 'step' and 'loss'")
        for key in ("step", "rank"):
            if key in row and (isinstance(row[key], bool) or not isinstance(row[key], int) or row[key] < 0):
                raise ValueError(f"{os.fspath(path)}:{n}: {key} must be an integer >= 0, got {str(row[key])[:40]!r}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{os.fspath(path)}: no metrics")
    return rows


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _rank_peaks(row: dict[str, Any]) -> dict[int, int]:
    per = row.get("peak_memory_bytes_per_rank")
    peak = row.get("peak_memory_bytes")
    if isinstance(peak, list) and per is None:
        per = peak
    out: dict[int, int] = {}
    if isinstance(per, list):
        out = {r: int(v) for r, v in enumerate(per) if _num(v) is not None}
    elif _num(peak) is not None:
        out = {int(row.get("rank", -1)): int(peak)}  # -1: the largest over ranks, rank unknown
    return out


def measured_summary(rows: list[dict[str, Any]], plan: Plan, prediction: dict[str, Any],
                     warmup_steps: int = 1) -> dict[str, Any]:
    """Predicted vs measured step time and peak memory, plus the per-step series. When the
    rows carry ``predicted_peak_memory_bytes_per_rank`` (the training job's prediction of live
    tensor bytes, the same quantity it measures), memory is compared with that, per rank."""
    by_step: dict[int, dict[str, Any]] = {}
    predicted_per_rank: list[int] | None = None
    for row in rows:
        step = int(row["step"])
        cur = by_step.setdefault(step, {"step": step, "loss": None, "step_time_s": None, "peaks": {}})
        if _num(row.get("loss")) is not None and cur["loss"] is None:
            cur["loss"] = float(row["loss"])
        t = _num(row.get("step_time_s"))
        if t is None and _num(row.get("step_time_ms")) is not None:
            t = float(row["step_time_ms"]) / 1e3
        if t is not None:  # ranks finish a step together; keep the slowest
            cur["step_time_s"] = max(t, cur["step_time_s"] or 0.0)
        for r, v in _rank_peaks(row).items():
            cur["peaks"][r] = max(v, cur["peaks"].get(r, 0))
        pp = row.get("predicted_peak_memory_bytes_per_rank")  # the job's live-tensor prediction
        if isinstance(pp, list) and all(_num(v) is not None for v in pp):
            predicted_per_rank = [int(v) for v in pp]
    steps = [by_step[k] for k in sorted(by_step)]
    times = [s["step_time_s"] for s in steps[warmup_steps:] if s["step_time_s"] is not None]
    if not times:  # too few steps: use what there is
        times = [s["step_time_s"] for s in steps if s["step_time_s"] is not None]
    peaks: dict[int, int] = {}
    for s in steps:
        for r, v in s["peaks"].items():
            peaks[r] = max(v, peaks.get(r, 0))
    per_stage = _stage_peaks(peaks, plan, prediction, predicted_per_rank)
    measured_time = statistics.median(times) if times else None
    predicted_time = prediction["step_time_s"]
    measured_peak = max(peaks.values()) if peaks else None
    predicted_peak = prediction["max_peak_memory_bytes"]
    rank_rows = []
    if predicted_per_rank is not None and len(predicted_per_rank) == plan.world_size:
        predicted_peak = max(predicted_per_rank)
        rank_rows = [{"rank": r, "predicted": predicted_per_rank[r], "measured": peaks.get(r),
                      "error": _rel(predicted_per_rank[r], peaks.get(r))} for r in range(plan.world_size)]
    return {
        "rank_peak_memory_bytes": rank_rows,
        "series": [{"step": s["step"], "loss": s["loss"], "step_time_s": s["step_time_s"]} for s in steps],
        "warmup_steps": warmup_steps,
        "step_time_s": {"predicted": predicted_time, "measured": measured_time,
                        "error": _rel(predicted_time, measured_time)},
        "peak_memory_bytes": {"predicted": predicted_peak, "measured": measured_peak,
                              "error": _rel(predicted_peak, measured_peak)},
        "stage_peak_memory_bytes": per_stage,
    }


def _stage_peaks(peaks: dict[int, int], plan: Plan, prediction: dict[str, Any],
                 predicted_per_rank: list[int] | None = None) -> list[dict[str, Any]]:
    known = {r: v for r, v in peaks.items() if 0 <= r < plan.world_size}
    if not known:
        return []
    out = []
    for stage in range(plan.pp):
        ranks = range(stage * plan.devices_per_stage, (stage + 1) * plan.devices_per_stage)
        vals = [known[r] for r in ranks if r in known]
        if not vals:
            continue
        pred = prediction["stage_memory"][stage]["total_bytes"]
        if predicted_per_rank is not None and len(predicted_per_rank) == plan.world_size:
            pred = max(predicted_per_rank[r] for r in ranks)
        out.append({"stage": stage, "predicted": pred, "measured": max(vals), "error": _rel(pred, max(vals))})
    return out


def _rel(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured
