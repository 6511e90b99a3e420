"""Held-out check of `galvatron profile refine` on a fidelity result file: fit the three scales
(compute, communication, optimizer) on the per-category measurements of one model's plans, apply
them to another model's plans, and compare step-time errors before and after.

The refined prediction of a plan is its predicted step with each kind's terms of the slowest
stage (and its share of the bubble, see ``galvatron.profiler.refine.split_prediction``)
multiplied by the fitted scale: the cost model's step is linear in the three kinds up to the
pipeline's max over stages, which these 2-process plans do not change.

Usage: ``python benchmarks/fidelity_refine_eval.py RESULT.jsonl --fit gpt2 --apply llama``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))


def observations(rows):
    from galvatron.profiler.refine import Observation

    kinds = {"compute": ("forward", "backward", "recompute"),
             "comm": ("tp_comm", "sp_comm", "dp_comm", "redistribution"), "optimizer": ("optimizer",)}
    pred_keys = {"compute": ("compute_ms",), "comm": ("tp_comm_ms", "sp_comm_ms", "dp_comm_ms",
                                                      "redistribution_ms", "grad_sync_ms"),
                 "optimizer": ("optimizer_ms",)}
    out = []
    for r in rows:
        stages, ranks = r["predicted_breakdown_ms"], r["measured_time_by_category_s"]
        for i, m in enumerate(ranks):  # ranks in order: stage = rank // (ranks per stage)
            b = stages[i * len(stages) // len(ranks)]
            for k in kinds:
                p = sum(b.get(x, 0.0) for x in pred_keys[k]) * 1e-3
                v = sum(m.get(x, 0.0) for x in kinds[k])
                if p > 0 and v > 0:
                    out.append(Observation({k: p}, v, r["plan"]))
    return out


def split(r):
    """The predicted step split into the three kinds, in seconds (as refine.split_prediction)."""
    step = r["predicted_step_s"]
    best = max(r["predicted_breakdown_ms"], key=lambda b: sum(v for k, v in b.items() if k.endswith("_ms")
                                                              and k not in ("fwd_ms", "recompute_ms")))
    comm = sum(best.get(k, 0.0) for k in ("tp_comm_ms", "sp_comm_ms", "dp_comm_ms", "redistribution_ms",
                                         "p2p_ms", "grad_sync_ms"))
    comp, opt = best.get("compute_ms", 0.0), best.get("optimizer_ms", 0.0)
    rest = max(0.0, step * 1e3 - comp - comm - opt)
    f = 1 + rest / (comp + comm) if comp + comm > 0 else 1.0
    return {"compute": comp * f * 1e-3, "comm": comm * f * 1e-3, "optimizer": opt * 1e-3}


def refined_step(r, scales):
    return sum(scales[k] * v for k, v in split(r).items())


def step_observations(rows):
    from galvatron.profiler.refine import Observation

    return [Observation(split(r), r["measured_step_s"], r["plan"]) for r in rows]


def stats(pred, meas, names):
    from run_fidelity_bench import spearman

    err = [abs(p - m) / m for p, m in zip(pred, meas, strict=True)]
    best = min(meas)
    i = names.index("searched") if "searched" in names else None
    chosen = min(range(len(pred)), key=lambda j: pred[j])
    return {"median_abs_error": statistics.median(err), "worst_abs_error": max(err),
            "spearman": spearman(pred, meas), "regret_of_predicted_best": meas[chosen] / best - 1,
            "predicted_best": names[chosen], "searched_regret": None if i is None else meas[i] / best - 1}


def main() -> None:
    from galvatron.profiler.refine import fit_scales

    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--fit", required=True)
    ap.add_argument("--apply", required=True)
    ap.add_argument("--level", choices=("step", "category"), default="step",
                    help="fit on step totals (as from training runs) or on the per-category rows (as from check)")
    args = ap.parse_args()
    rows = [json.loads(x) for x in open(args.result, encoding="utf-8")]
    rows = [r for r in rows if "predicted_breakdown_ms" in r]
    fit = [r for r in rows if r["model"] == args.fit]
    test = [r for r in rows if r["model"] == args.apply]
    ref = fit_scales(step_observations(fit) if args.level == "step" else observations(fit))
    meas = [r["measured_step_s"] for r in test]
    names = [r["plan"] for r in test]
    before = stats([r["predicted_step_s"] for r in test], meas, names)
    after = stats([refined_step(r, ref.scales) for r in test], meas, names)
    print(json.dumps({"level": args.level, "fit_on": args.fit, "applied_to": args.apply, "scales": ref.scales,
                      "observations": ref.observations, "before": before, "after": after}, indent=1))


if __name__ == "__main__":
    main()
