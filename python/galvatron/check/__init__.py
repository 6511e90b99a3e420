"""``galvatron check``: run a plan and compare the cost model's prediction with measurement.

Real runs (:func:`check`): ``nproc`` local processes (or the ranks of ``torchrun``) train the
plan on random batches for ``warmup`` + ``steps`` steps with the runtime's instrumentation on
(:mod:`galvatron.parallel.instrument`); every rank reports the median time per category and
its peak live tensor bytes by kind, beside the cost model's terms for its pipeline stage
(:mod:`galvatron.check.report`). Fake runs (:func:`check_fake`): the runtime on fake tensors
with a fake process group of the plan's world size (:mod:`galvatron.check.fake`), peak live
tensor bytes of the first and last rank of every stage, beside the predicted peak.

The prediction uses the profiles the training job would use (see :func:`profiles_for`).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from galvatron.plan import Plan

GiB = 2**30


def profiles_for(model_name: str, seq_len: int | None, world: int, overrides: dict[str, Any] | None = None,
                 precision: str = "fp32", hardware: str | None = None, hardware_preset: str | None = None,
                 model_profile: str | None = None, measure: bool = True):
    """``(hardware profile, model profile)`` for the prediction: the files or preset given;
    otherwise what ``galvatron train`` uses on this machine: on CPU a quick measurement of the
    collectives with ``world`` local processes (cached) and, for the debug models, a quick
    measurement of the model (``measure=False``, or one process: the ``cpu-gloo`` preset and the
    analytic profile); on CUDA the A100-80G preset; analytic model profiles for real sizes."""
    import torch

    import galvatron

    overrides = dict(overrides or {})
    if hardware:
        hw = galvatron.HardwareProfile.load(hardware)
    elif hardware_preset or torch.cuda.is_available() or not measure or world < 2:  # 1 process: no collectives
        preset = hardware_preset or ("a100-80g-sxm" if torch.cuda.is_available() else "cpu-gloo")
        gpn = min(world, 8) if preset != "cpu-gloo" else world
        hw = galvatron.hardware_preset(preset, num_nodes=max(1, world // gpn), gpus_per_node=gpn)
    else:
        from galvatron.profiler.hardware import HardwareOptions
        from galvatron.profiler.launch import cached_profile, profile_hardware

        opts = HardwareOptions(quick=True, verbose=False)
        hw = cached_profile(world, opts) or profile_hardware(world, opts)
    if model_profile:
        return hw, galvatron.ModelProfile.load(model_profile)
    if measure and not hardware and not torch.cuda.is_available() and model_name.endswith("-debug"):
        from galvatron.training.config import TrainConfig
        from galvatron.training.job import model_profile_for

        cfg = TrainConfig()
        cfg.model.name, cfg.model.dtype, cfg.model.overrides = model_name, precision, overrides
        cfg.model.seq_len = seq_len or cfg.model.seq_len
        with tempfile.TemporaryDirectory() as d:
            cfg.run_dir = d
            return hw, model_profile_for(cfg, hw, world)
    return hw, galvatron.model_profile(model_name, seq_len=seq_len, hardware=hw, precision=precision,
                                       **overrides)


def _spec(plan: Plan, model_name: str, seq_len: int | None, overrides: dict[str, Any], steps: int,
          warmup: int, memory: bool) -> dict[str, Any]:
    return {"plan": plan.replace(predicted=None).to_dict(), "model": model_name, "seq_len": seq_len,
            "overrides": overrides, "steps": steps, "warmup": warmup, "memory": memory}


def measure(plan: Plan, model_name: str, seq_len: int | None = None, overrides: dict[str, Any] | None = None,
            nproc: int | None = None, steps: int = 5, warmup: int = 2, memory: bool = True,
            timeout_s: float = 900.0) -> list[dict[str, Any]]:
    """Per-rank measurements (rank order) of ``plan``: ``nproc`` local processes, or, under
    ``torchrun``, this process group (every rank returns the list)."""
    from galvatron.training.launch import spawn, under_launcher

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps: at least 1 measured step (got {steps}); warmup: >= 0 (got {warmup})")
    spec = _spec(plan, model_name, seq_len, dict(overrides or {}), steps, warmup, memory)
    if under_launcher():
        from galvatron.check.worker import run_spec
        from galvatron.training.job import init_distributed

        init_distributed()
        return run_spec(spec, gather=True)
    nproc = nproc or plan.world_size
    if nproc != plan.world_size:
        raise ValueError(f"--nproc {nproc}: the plan is for world_size {plan.world_size}")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "spec.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        code = spawn(nproc, ["-m", "galvatron.check.worker", path, d], os.path.join(d, "logs"),
                     timeout_s=timeout_s)
        if code != 0:
            raise ValueError(f"check: the plan's run failed (exit code {code}); see the messages above")
        out = []
        for r in range(nproc):
            with open(os.path.join(d, f"rank{r}.json"), encoding="utf-8") as f:
                out.append(json.load(f))
    return out


def check(plan: Plan, model_name: str, seq_len: int | None = None, overrides: dict[str, Any] | None = None,
          nproc: int | None = None, steps: int = 5, warmup: int = 2, prediction=None,
          **profile_kw: Any) -> dict[str, Any]:
    """Run ``plan`` and return the report: per rank, every term predicted / measured / error."""
    import galvatron
    from galvatron.check import report as R

    profiles = None
    if prediction is None:
        from galvatron.training.launch import under_launcher

        if under_launcher():  # as the job does: no local measurement from inside torchrun
            profile_kw.setdefault("measure", False)
        hw, mp = profiles_for(model_name, seq_len, plan.world_size, overrides, plan.precision.value,
                              **profile_kw)
        prediction = galvatron.estimate(plan, mp, hw)
        profiles = {"hardware": hw.to_dict(), "model": mp.to_dict()}  # for `galvatron profile refine`
    ranks = measure(plan, model_name, seq_len, overrides, nproc, steps, warmup)
    rows = [R.rank_rows(prediction, m) for m in ranks]
    out = {"model": model_name, "seq_len": seq_len, "world_size": plan.world_size, "steps": steps,
           "warmup": warmup, "plan": plan.replace(predicted=None).to_dict(), "ranks": rows,
           "summary": R.summary(rows), "raw": ranks}
    if profiles:
        out["profiles"] = profiles
    return out


def check_fake(plan: Plan, model_name: str, seq_len: int, overrides: dict[str, Any] | None = None,
               ranks: list[int] | None = None, prediction=None, hardware_preset: str | None = None,
               **kw: Any) -> dict[str, Any]:
    """Peak live tensor bytes of the runtime on fake tensors against the prediction, for the
    first and last rank of every stage (or ``ranks``)."""
    import galvatron
    from galvatron.check.fake import measure_fake
    from galvatron.check.report import predicted_stage_terms, rel_error

    if prediction is None:
        hw, mp = profiles_for(model_name, seq_len, plan.world_size, overrides, plan.precision.value,
                              hardware_preset=hardware_preset or "a100-80g-sxm", measure=False)
        prediction = galvatron.estimate(plan, mp, hw)
    rows = []
    for m in measure_fake(plan, model_name, seq_len, overrides, ranks, **kw):
        pred = predicted_stage_terms(prediction, m["stage"])["memory_bytes"]
        meas = m["memory_bytes"]
        rows.append({"rank": m["rank"], "stage": m["stage"], "predicted_peak_bytes": pred["total"],
                     "measured_peak_bytes": meas["total"],
                     "error": rel_error(pred["total"], meas["total"]),
                     "predicted_bytes": pred, "measured_bytes": meas})
    worst = max((abs(r["error"]) for r in rows if r["error"] is not None), default=None)
    return {"model": model_name, "seq_len": seq_len, "world_size": plan.world_size,
            "plan": plan.replace(predicted=None).to_dict(), "ranks": rows, "worst_abs_error": worst}


def format_fake(report: dict[str, Any]) -> str:
    lines = [f"{report['model']} seq {report['seq_len']} on {report['world_size']} devices: peak live "
             "tensor GiB per rank (fake tensors), predicted / measured / error"]
    for r in report["ranks"]:
        e = r["error"]
        lines.append(f"  rank {r['rank']:>4} stage {r['stage']:>2}: {r['predicted_peak_bytes'] / GiB:8.3f} "
                     f"{r['measured_peak_bytes'] / GiB:8.3f} {'-' if e is None else f'{e * 100:+.2f}%'}")
        pb, mb = r["predicted_bytes"], r["measured_bytes"]
        lines.append("      " + ", ".join(
            f"{k} {pb.get(k, 0) / GiB:.2f}/{mb.get(k, 0) / GiB:.2f}" for k in ("param", "grad", "optimizer", "activation")
        ) + f", temp -/{mb.get('temp', 0) / GiB:.2f} (transient {pb.get('transient', 0) / GiB:.2f})")
    if report["worst_abs_error"] is not None:
        lines.append(f"worst |error| {report['worst_abs_error'] * 100:.2f}%")
    return "\n".join(lines)


def main_worker(argv: list[str] | None = None) -> int:  # pragma: no cover - used by the worker module
    from galvatron.check.worker import main

    return main(argv if argv is not None else sys.argv[1:])
