"""``galvatron profile refine``: fit a profile's free constants to measured runs.

The cost model's time is a sum of three kinds of terms, each from its own profile entries:

- **compute** (forward, backward, recomputation): the model profile's per-layer times;
- **communication** (tensor/sequence/data-parallel collectives, redistribution, p2p): the
  hardware profile's alpha-beta entries;
- **optimizer**: the hardware profile's ``optimizer_ms_per_param``.

A refinement multiplies each kind by one constant, ``compute_scale``, ``comm_scale`` and
``optimizer_scale``, fitted to measurements by least squares on relative errors (each
observation ``measured ~ sum_k scale_k * predicted_k`` weighted by ``1 / measured^2``). The
constants say how far this machine, in the conditions of the measured runs, is from the
profile (e.g. ``compute_scale`` 1.2: the layers run 20% slower in training than when profiled
alone); the refined profiles are the given ones with the scaled entries (compute times;
collective latency ``alpha_ms * comm_scale`` and bandwidth ``bandwidth_gbps / comm_scale``;
``optimizer_ms_per_param * optimizer_scale``), so the search uses them like any profile.

Measurements (``RUN``, any number, mixed):

- a report of ``galvatron check --json OUT`` (a file, or a directory holding ``check.json``;
  it records the profiles its prediction used, the default base profiles): per rank, the measured and predicted time of every category — one observation per kind and
  rank (compute = forward + backward + recompute; communication = tp_comm + sp_comm +
  dp_comm + redistribution);
- a training run directory (``metrics.jsonl``, ``plan.json``): the median step time after the
  first ``skip`` steps against the prediction of the plan with the base profiles, split into
  the three kinds (the pipeline bubble shared between compute and communication in
  proportion) — one observation per run, which constrains the scales jointly.

A kind without observations (e.g. no communication in any run), or that is less than 5% of the
predicted time of every observation (step totals cannot determine it), keeps scale 1 and is
reported as not fitted. The observations' other kinds are then fitted with it held at 1. Every malformed input is a ``ValueError`` naming the file and what is expected.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from galvatron._io import parse_json_text

KINDS = ("compute", "comm", "optimizer")
MIN_SHARE = 0.05  # a kind must be at least this share of some observation's prediction to be fitted
COMPUTE_ROWS = ("forward", "backward", "recompute")
COMM_ROWS = ("tp_comm", "sp_comm", "dp_comm", "redistribution")


@dataclass(frozen=True)
class Observation:
    """``measured_s ~ sum_k scale_k * predicted_s[k]`` (seconds)."""

    predicted_s: dict[str, float]
    measured_s: float
    source: str


@dataclass
class Refinement:
    scales: dict[str, float]
    fitted: dict[str, bool]
    observations: int
    residual_before: float  # median |relative error| with scales 1
    residual_after: float  # with the fitted scales
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------- the fit


def fit_scales(obs: list[Observation]) -> Refinement:
    """Least-squares scales (relative errors) of the kinds that occur in ``obs``."""
    import numpy as np

    if not obs:
        raise ValueError("refine: no measurements to fit (give check reports or training run directories)")
    def share(o: Observation, k: str) -> float:
        total = sum(o.predicted_s.values())
        return o.predicted_s.get(k, 0.0) / total if total > 0 else 0.0

    # A kind is determined only by observations where it is a visible part of the measured
    # time: step totals in which it never exceeds MIN_SHARE leave it at 1.
    used = [k for k in KINDS if any(share(o, k) >= MIN_SHARE for o in obs)]
    if not used:
        raise ValueError("refine: every predicted term of the measurements is zero; nothing to fit")
    fixed = [k for k in KINDS if k not in used]
    a = np.array([[o.predicted_s.get(k, 0.0) / o.measured_s for k in used] for o in obs])
    b = np.array([1.0 - sum(o.predicted_s.get(k, 0.0) for k in fixed) / o.measured_s for o in obs])
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    scales = {k: 1.0 for k in KINDS}
    fitted = {k: False for k in KINDS}
    for k, v in zip(used, sol, strict=True):
        if not np.isfinite(v) or v <= 0:
            raise ValueError(f"refine: the fitted {k} scale is {v:.3g} (not positive): the measurements "
                             "do not determine it; add runs where that term is a larger part of the step")
        scales[k], fitted[k] = float(v), True
    before = [abs(sum(o.predicted_s.values()) / o.measured_s - 1) for o in obs]
    after = [abs(sum(scales[k] * o.predicted_s.get(k, 0.0) for k in KINDS) / o.measured_s - 1) for o in obs]
    return Refinement(scales, fitted, len(obs), statistics.median(before), statistics.median(after),
                      sorted({o.source for o in obs}))


# ------------------------------------------------------------------------------- reading runs


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or v == float("inf"):
        raise ValueError(f"{where}: expected a non-negative number, got {str(v)[:40]!r}")
    return float(v)


def check_report_observations(report: Any, where: str) -> list[Observation]:
    """One observation per kind and rank of a ``galvatron check --json`` report."""
    if not isinstance(report, dict) or not isinstance(report.get("ranks"), list) or not report["ranks"]:
        raise ValueError(f"{where}: not a report of `galvatron check --json` (expected a 'ranks' list)")
    out = []
    for i, r in enumerate(report["ranks"]):
        rows = r.get("time_s") if isinstance(r, dict) else None
        if not isinstance(rows, dict):
            raise ValueError(f"{where}: ranks[{i}].time_s: expected the rows of time (a 'galvatron check' report)")
        for kind, names in (("compute", COMPUTE_ROWS), ("comm", COMM_ROWS), ("optimizer", ("optimizer",))):
            pred = meas = 0.0
            for name in names:
                row = rows.get(name)
                if not isinstance(row, dict):
                    raise ValueError(f"{where}: ranks[{i}].time_s.{name}: missing (expected predicted and measured)")
                pred += _num(row.get("predicted"), f"{where}: ranks[{i}].time_s.{name}.predicted")
                meas += _num(row.get("measured"), f"{where}: ranks[{i}].time_s.{name}.measured")
            if pred > 0 and meas > 0:
                out.append(Observation({kind: pred}, meas, where))
    return out


def _median_step(path: str, skip: int) -> tuple[float, int]:
    times = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = parse_json_text(line, f"{path}: line {n}")  # bounded: depth, huge integers
            if not isinstance(rec, dict) or "step_time_s" not in rec:
                continue  # other records (e.g. evaluation only)
            times.append(_num(rec["step_time_s"], f"{path}: line {n}: step_time_s"))
    if len(times) <= skip:
        raise ValueError(f"{path}: {len(times)} step records; need more than {skip} (the first {skip} are "
                         "warm-up and are skipped)")
    kept = times[skip:]
    return statistics.median(kept), len(kept)


def split_prediction(pred: Any) -> dict[str, float]:
    """The predicted step (seconds) split into compute, communication and optimizer: the
    slowest stage's terms, the rest of the step (bubble) shared between compute and
    communication in proportion to them."""
    best: dict[str, float] = {}
    for b in pred.stage_breakdown_ms:
        comm = sum(b.get(k, 0.0) for k in ("tp_comm_ms", "sp_comm_ms", "dp_comm_ms", "redistribution_ms",
                                          "p2p_ms", "grad_sync_ms"))
        terms = {"compute": b.get("compute_ms", 0.0), "comm": comm, "optimizer": b.get("optimizer_ms", 0.0)}
        if sum(terms.values()) > sum(best.values()):
            best = terms
    step_ms = pred.step_time_s * 1e3
    rest = step_ms - sum(best.values())
    work = best["compute"] + best["comm"]
    if rest > 0 and work > 0:
        best = {"compute": best["compute"] * (1 + rest / work), "comm": best["comm"] * (1 + rest / work),
                "optimizer": best["optimizer"]}
    return {k: v * 1e-3 for k, v in best.items()}


def run_dir_observation(run_dir: str, hw: Any, mp: Any, skip: int) -> Observation:
    """One observation from a training run directory (see the module docstring)."""
    import galvatron
    from galvatron.plan_io import load_plan

    metrics = os.path.join(run_dir, "metrics.jsonl")
    plan_path = os.path.join(run_dir, "plan.json")
    for p in (metrics, plan_path):
        if not os.path.isfile(p):
            raise ValueError(f"{run_dir}: {os.path.basename(p)} not found (a training run directory holds "
                             "metrics.jsonl and plan.json)")
    measured, _ = _median_step(metrics, skip)
    if measured <= 0:
        raise ValueError(f"{metrics}: the median step time is 0")
    plan = load_plan(plan_path)
    return Observation(split_prediction(galvatron.estimate(plan, mp, hw)), measured, run_dir)


def load_observations(runs: list[str], hw: Any = None, mp: Any = None, skip: int = 2) -> list[Observation]:
    """Observations of every ``RUN`` (check report file or directory, or training run
    directory; see the module docstring). Training runs need the base profiles ``hw``, ``mp``."""
    from galvatron._io import read_json

    if not runs:
        raise ValueError("refine: give at least one RUN (a `galvatron check --json` report or a run directory)")
    out: list[Observation] = []
    for run in runs:
        if os.path.isdir(run):
            report = os.path.join(run, "check.json")
            if os.path.isfile(report):
                out += check_report_observations(read_json(report), report)
            elif os.path.isfile(os.path.join(run, "metrics.jsonl")):
                if hw is None or mp is None:
                    raise ValueError(f"{run}: a training run needs the base profiles (--hardware and "
                                     "--model-profile, or hardware.json and model_profile.json in the run directory)")
                out.append(run_dir_observation(run, hw, mp, skip))
            else:
                raise ValueError(f"{run}: neither check.json (a `galvatron check --json` report) nor "
                                 "metrics.jsonl (a training run) is in this directory")
        elif os.path.exists(run):
            out += check_report_observations(read_json(run), run)
        else:
            raise ValueError(f"{run}: no such file or directory")
    return out


def embedded_profiles(runs: list[str]) -> tuple[Any, Any]:
    """The profiles a ``galvatron check --json`` report recorded (``profiles``: what its
    prediction used), from the first RUN that has them; ``(None, None)`` if none does."""
    from galvatron._io import read_json
    from galvatron.profiles import HardwareProfile, ModelProfile

    for run in runs:
        path = os.path.join(run, "check.json") if os.path.isdir(run) else run
        if not os.path.isfile(path):
            continue
        data = read_json(path)
        prof = data.get("profiles") if isinstance(data, dict) else None
        if isinstance(prof, dict) and "hardware" in prof and "model" in prof:
            try:
                return HardwareProfile.from_dict(prof["hardware"]), ModelProfile.from_dict(prof["model"])
            except ValueError as e:
                raise ValueError(f"{path}: profiles: {e}") from None
    return None, None


# ------------------------------------------------------------------------------- applying


def refined_profiles(hw: Any, mp: Any, ref: Refinement) -> tuple[Any, Any]:
    """``(hardware, model)`` profiles with the refinement's scales applied (new objects;
    ``measurements["refined"]`` records the scales and the runs they came from)."""
    import copy

    from galvatron.profiler.model import scale_compute_times

    s = ref.scales
    colls = tuple(dataclasses.replace(c, alpha_ms=c.alpha_ms * s["comm"], bandwidth_gbps=c.bandwidth_gbps / s["comm"])
                  for c in hw.collectives)
    hw2 = dataclasses.replace(hw, collectives=colls, optimizer_ms_per_param=hw.optimizer_ms_per_param * s["optimizer"],
                              measurements={**hw.measurements, "refined": ref.to_dict()}).validate()
    mp2 = copy.deepcopy(mp)
    scale_compute_times(mp2, s["compute"])
    mp2.measurements = {**(mp2.measurements or {}), "refined": ref.to_dict()}
    mp2.to_tables()  # validates
    return hw2, mp2
