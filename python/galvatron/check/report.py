"""Predicted against measured, term by term: the cost model's per-stage terms beside a rank's
measurement (:mod:`galvatron.check.measure`), as rows for printing and JSON."""

from __future__ import annotations

from typing import Any

# (row name, measured categories summed) in the order printed
TIME_ROWS = (
    ("step", None),
    ("forward", ("forward",)),
    ("backward", ("backward",)),
    ("recompute", ("recompute",)),
    ("tp_comm", ("tp_comm",)),
    ("sp_comm", ("sp_comm",)),
    ("dp_comm", ("dp_comm",)),
    ("redistribution", ("redistribution",)),
    ("p2p+bubble", ("pipeline",)),
    ("optimizer", ("optimizer",)),
    ("other", ("other",)),
)
MEMORY_ROWS = (
    ("param", ("param", "buffer")),
    ("grad", ("grad",)),
    ("optimizer", ("optimizer",)),
    ("activation", ("activation",)),
    ("transient", ("temp", "other")),
    ("total", ("total",)),
)


def predicted_stage_terms(pred, stage: int) -> dict[str, dict[str, float]]:
    """Seconds per time row and bytes per memory row that the cost model predicts for a rank
    of pipeline stage ``stage`` (``pred``: :class:`galvatron.Prediction`). Memory ``total`` is
    live tensor bytes: the model's ``buffer`` and ``overhead`` terms (communication buffers,
    framework context) are not tensors and are left out of it."""
    b = pred.stage_breakdown_ms[stage]
    ms = 1e-3
    time_s = {
        "step": pred.step_time_s,
        "forward": b["fwd_ms"] * ms,
        "backward": (b["compute_ms"] - b["fwd_ms"] - b["recompute_ms"]) * ms,
        "recompute": b["recompute_ms"] * ms,
        "tp_comm": b["tp_comm_ms"] * ms,
        "sp_comm": b["sp_comm_ms"] * ms,
        "dp_comm": (b["dp_comm_ms"] + b["grad_sync_ms"]) * ms,
        "redistribution": b["redistribution_ms"] * ms,
        "p2p+bubble": (b["p2p_ms"] + b["bubble_ms"]) * ms,
        "optimizer": b["optimizer_ms"] * ms,
        "other": 0.0,
    }
    return {"time_s": time_s, "memory_bytes": predicted_memory(pred.stage_memory[stage])}


def predicted_memory(stage_memory: dict[str, int]) -> dict[str, int]:
    """The memory rows of one stage's predicted ``stage_memory`` (``total``: tensors only)."""
    m = stage_memory
    mem = {"param": m["param_bytes"], "grad": m["grad_bytes"], "optimizer": m["optimizer_bytes"],
           "activation": m["activation_bytes"], "transient": m["transient_bytes"]}
    mem["total"] = sum(mem.values())
    return mem


def predicted_tensor_bytes(stage_memory: dict[str, int]) -> int:
    """Predicted peak live tensor bytes of a stage (``total_bytes`` without the buffer and
    framework-overhead terms, which are not tensors)."""
    return predicted_memory(stage_memory)["total"]


def measured_rank_terms(measured: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The same rows from one rank's measurement."""
    t = measured["time_s"]
    time_s = {"step": measured["step_time_s"]}
    for row, cats in TIME_ROWS[1:]:
        time_s[row] = sum(t.get(c, 0.0) for c in cats)
    out: dict[str, dict[str, float]] = {"time_s": time_s}
    if "memory_bytes" in measured:
        mb = measured["memory_bytes"]
        out["memory_bytes"] = {row: sum(mb.get(c, 0) for c in cats) for row, cats in MEMORY_ROWS}
    return out


def rel_error(predicted: float, measured: float) -> float | None:
    """(predicted - measured) / measured; None when nothing was measured."""
    return None if not measured else (predicted - measured) / measured


def rank_rows(pred, measured: dict[str, Any]) -> dict[str, Any]:
    """One rank's report: every row with predicted, measured and relative error."""
    p = predicted_stage_terms(pred, measured["stage"])
    m = measured_rank_terms(measured)
    out: dict[str, Any] = {"rank": measured["rank"], "stage": measured["stage"]}
    for section in ("time_s", "memory_bytes"):
        if section not in m:
            continue
        out[section] = {row: {"predicted": p[section][row], "measured": m[section][row],
                              "error": rel_error(p[section][row], m[section][row])}
                        for row in p[section]}
    if "dp_comm_async_span" in measured.get("time_s", {}):
        out["dp_comm_async_span_s"] = measured["time_s"]["dp_comm_async_span"]
    return out


def summary(ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """Step-time error (the slowest rank's measured step) and the worst per-rank peak-memory error."""
    step_pred = ranks[0]["time_s"]["step"]["predicted"]
    step_meas = max(r["time_s"]["step"]["measured"] for r in ranks)
    out = {"predicted_step_time_s": step_pred, "measured_step_time_s": step_meas,
           "step_time_error": rel_error(step_pred, step_meas)}
    mem = [r["memory_bytes"]["total"] for r in ranks if "memory_bytes" in r]
    if mem:
        errs = [x["error"] for x in mem if x["error"] is not None]
        out["peak_memory_error_max_abs"] = max((abs(e) for e in errs), default=None)
        out["predicted_peak_memory_bytes_per_rank"] = [x["predicted"] for x in mem]
        out["measured_peak_memory_bytes_per_rank"] = [x["measured"] for x in mem]
    return out


def _fmt_time(v: float) -> str:
    return f"{v * 1e3:10.2f}"


def _fmt_bytes(v: float) -> str:
    return f"{v / 2**20:10.2f}"


def _fmt_err(e: float | None) -> str:
    return "         -" if e is None else f"{e * 100:+9.1f}%"


def format_report(report: dict[str, Any]) -> str:
    """A table per rank: rows of time (ms) and memory (MiB), predicted / measured / error."""
    lines = []
    s = report["summary"]
    lines.append(f"step time: predicted {s['predicted_step_time_s'] * 1e3:.1f} ms, measured "
                 f"{s['measured_step_time_s'] * 1e3:.1f} ms (slowest rank, median of "
                 f"{report['steps']} steps after {report['warmup']} warm-up), error "
                 f"{_fmt_err(s['step_time_error']).strip()}")
    if s.get("peak_memory_error_max_abs") is not None:
        lines.append(f"peak live tensor memory: worst rank error {s['peak_memory_error_max_abs'] * 100:.1f}%")
    for r in report["ranks"]:
        lines.append(f"rank {r['rank']} (stage {r['stage']})")
        lines.append(f"  {'term':<16}{'predicted':>10}{'measured':>10}{'error':>11}")
        for row, v in r["time_s"].items():
            lines.append(f"  {row + ' ms':<16}{_fmt_time(v['predicted'])}{_fmt_time(v['measured'])}"
                         f"{_fmt_err(v['error'])}")
        for row, v in r.get("memory_bytes", {}).items():
            lines.append(f"  {row + ' MiB':<16}{_fmt_bytes(v['predicted'])}{_fmt_bytes(v['measured'])}"
                         f"{_fmt_err(v['error'])}")
    return "\n".join(lines)
