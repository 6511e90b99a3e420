"""Cost-model fidelity on this machine: predicted against measured step time and peak live
tensor memory for a plan set covering every plan dimension.

For each model (two families, sized so a step takes >= 0.3 s on 2 processes): every uniform
plan of the 2-process space (pp 1/2 with GPipe and 1F1B; tp, Megatron-SP, Ulysses; every dp
type; checkpointing), ``--random`` random layer-wise plans, and the plan the search picks with
the profiles ``galvatron train`` uses (a quick measurement of this machine's collectives and of
the model). Each plan runs ``--steps`` measured steps after ``--warmup`` through
``galvatron.check.measure`` (the runtime's instrumentation). Reported per plan: predicted and
measured step time (median over steps, slowest rank) and peak live tensor bytes per rank; per
model: median and worst |time error|, median |memory error|, Spearman correlation of predicted
and measured times, and the searched plan's regret (its measured time over the best measured
time of the set, minus 1). ``--quickstart`` also runs the quick start's 4-process
configuration (gpt2-debug 4 layers, hidden 128, seq 128, batch 16) with its searched plan
and the uniform plans.

Usage: ``python benchmarks/run_fidelity_bench.py [--quick] [--quickstart] [--out FILE.jsonl]``;
``--report FILE.jsonl`` prints the tables of a result file. The full run (2 x 28 plans and the
4-process quick start) takes about 16 minutes on 2 cores, ``--quick`` (2 x 12 plans) about 7.
Timings depend on the load of the machine: the script records ``os.getloadavg()`` before and
after every plan.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

MODELS = {  # name -> (flavour, overrides, seq_len, global batch); a DDP step takes ~0.4-0.5 s here
    "gpt2": ("gpt2-debug", {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "ffn_hidden": 1024,
                            "max_seq_len": 128}, 128, 16),
    "llama": ("llama-debug", {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "num_kv_heads": 4,
                              "ffn_hidden": 688, "max_seq_len": 128}, 128, 16),
}
# --quick: one plan per dimension (dp types, checkpointing, tp, Megatron-SP, Ulysses, both schedules)
QUICK = ("pp1_ddp", "pp1_zero1", "pp1_zero2", "pp1_zero3", "pp1_ddp_ckpt", "pp1_tp2_ddp", "pp1_tp2_megatron_ddp",
         "pp1_ulysses_sp2_zero3", "pp2_gpipe_ddp", "pp2_1f1b_ddp_ckpt")


def uniform_plans(world: int, num_layers: int, gbs: int):
    from galvatron.plan import Plan

    out = []
    for pp in (1, 2):
        n = world // pp
        shard = [dict()]
        if n >= 2:
            shard += [dict(tp=2), dict(tp=2, sp_kind="megatron"), dict(sp=2, sp_kind="ulysses")]
        for sh in shard:
            d = n // (sh.get("tp", 1) * sh.get("sp", 1))
            dp_types = ("ddp", "zero1", "zero2", "zero3") if d > 1 or sh.get("sp", 1) > 1 else ("ddp",)
            for dp_type in dp_types:
                for ckpt in (False, True):
                    scheds = ("gpipe", "1f1b") if pp > 1 else ("1f1b",)
                    for sched in scheds:
                        m = 2 if pp > 1 else 1
                        key = "_".join(x for x in (f"pp{pp}" + (f"_{sched}" if pp > 1 else ""),
                                                   "tp2" if sh.get("tp") else "", sh.get("sp_kind", "") or "",
                                                   "sp2" if sh.get("sp") else "", dp_type,
                                                   "ckpt" if ckpt else "") if x)
                        out.append((key, Plan.uniform(world, num_layers, pp=pp, schedule=sched,
                                                      num_microbatches=m, global_batch_size=gbs,
                                                      dp_type=dp_type, checkpoint=ckpt, precision="fp32", **sh)))
    return out


def random_plans(world: int, num_layers: int, gbs: int, count: int, seed: int):
    from galvatron.plan import LayerStrategy as S
    from galvatron.plan import Plan

    rng = random.Random(seed)
    choices = [dict(), dict(tp=2), dict(tp=2, sp_kind="megatron"), dict(sp=2, sp_kind="ulysses")]
    out = []
    for i in range(count):
        layers = tuple(S(**rng.choice(choices), dp_type=rng.choice(("ddp", "zero1", "zero2", "zero3")),
                         checkpoint=rng.random() < 0.3) for _ in range(num_layers))
        emb = S(**rng.choice(choices[:2]), dp_type=rng.choice(("ddp", "zero3")))
        out.append((f"random{i}", Plan(world_size=world, layers=layers, embedding=emb, global_batch_size=gbs,
                                       num_microbatches=rng.choice((1, 2)), precision="fp32").validate()))
    return out


def spearman(a: list[float], b: list[float]) -> float:
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r

    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else float("nan")


def run_model(label, flavour, overrides, seq, gbs, world, plans, args, sink):
    import galvatron
    from galvatron.check import measure, profiles_for
    from galvatron.check.report import predicted_tensor_bytes

    hw, mp = profiles_for(flavour, seq, world, overrides, "fp32")
    res = galvatron.search(mp, hw, global_batch_size=gbs, num_threads=1)
    plans = plans + [("searched", res.plan.replace(predicted=None))]
    rows = []
    for key, plan in plans:
        pred = galvatron.estimate(plan, mp, hw)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        try:
            ranks = measure(plan, flavour, seq, overrides, nproc=world, steps=args.steps, warmup=args.warmup)
        except ValueError as e:
            sink({"model": label, "plan": key, "error": str(e)})
            continue
        meas_t = max(r["step_time_s"] for r in ranks)
        n = plan.devices_per_stage
        mem = [(predicted_tensor_bytes(pred.stage_memory[r["rank"] // n]), r["memory_bytes"]["total"])
               for r in ranks]
        row = {"model": label, "flavour": flavour, "overrides": overrides, "seq_len": seq, "world": world,
               "plan": key, "plan_summary": plan.summary().splitlines()[0], "plan_dict": plan.to_dict(),
               "predicted_step_s": pred.step_time_s, "measured_step_s": meas_t,
               "step_times_s": [r["step_times_s"] for r in ranks],
               "time_error": (pred.step_time_s - meas_t) / meas_t,
               "measured_time_by_category_s": [r["time_s"] for r in ranks],
               "predicted_breakdown_ms": list(pred.stage_breakdown_ms),
               "predicted_peak_bytes": [p for p, _ in mem], "measured_peak_bytes": [m for _, m in mem],
               "memory_errors": [(p - m) / m for p, m in mem],
               "load_before": load0, "load_after": os.getloadavg()[0],
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        sink(row)
    if not rows:
        return
    terr = [abs(r["time_error"]) for r in rows]
    merr = [abs(e) for r in rows for e in r["memory_errors"]]
    best = min(r["measured_step_s"] for r in rows)
    searched = [r for r in rows if r["plan"] == "searched"]
    sink({"model": label, "summary": True, "world": world, "plans": len(rows),
          "median_abs_time_error": statistics.median(terr), "worst_abs_time_error": max(terr),
          "median_abs_memory_error": statistics.median(merr), "worst_abs_memory_error": max(merr),
          "spearman": spearman([r["predicted_step_s"] for r in rows], [r["measured_step_s"] for r in rows]),
          "searched_regret": searched[0]["measured_step_s"] / best - 1 if searched else None,
          "searched_plan": searched[0]["plan_summary"] if searched else None})


def _autogroup() -> str:
    """This process's scheduling group (Linux autogroup): with autogroups on, ``nice`` orders
    processes only inside their session; other sessions share the cores equally whatever their
    nice value, so a measurement is only protected from them by the group's own nice value."""
    try:
        with open("/proc/self/autogroup", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "n/a"


def report(path: str) -> str:
    """Markdown tables of a result file (JSON lines written by this script)."""
    rows, summaries, head = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if "started" in r or "finished" in r:
                head.append(r)
            elif r.get("summary"):
                summaries.append(r)
            elif "predicted_step_s" in r:
                rows.append(r)
    out = [f"Runs: {', '.join(h.get('started') or 'finished ' + h['finished'] for h in head)}; "
           f"autogroup {head[0].get('autogroup', 'n/a') if head else 'n/a'}", ""]
    for label in dict.fromkeys(r["model"] for r in rows):
        world = next(r["world"] for r in rows if r["model"] == label)
        out += [f"### {label} ({world} processes)", "",
                "| plan | predicted step s | measured step s | time error | memory error per rank | load before/after |",
                "| --- | --- | --- | --- | --- | --- |"]
        for r in (x for x in rows if x["model"] == label):
            out.append(f"| {r['plan']} | {r['predicted_step_s']:.3f} | {r['measured_step_s']:.3f} | "
                       f"{r['time_error'] * 100:+.1f}% | "
                       + ", ".join(f"{e * 100:+.1f}%" for e in r["memory_errors"])
                       + f" | {r['load_before']:.1f} / {r['load_after']:.1f} |")
        for s in (x for x in summaries if x["model"] == label):
            out += ["", f"- **{label}** ({s['plans']} plans, {s['world']} processes): median |time error| "
                        f"{s['median_abs_time_error'] * 100:.1f}%, worst {s['worst_abs_time_error'] * 100:.1f}%; "
                        f"median |memory error| {s['median_abs_memory_error'] * 100:.1f}%, worst "
                        f"{s['worst_abs_memory_error'] * 100:.1f}%; Spearman {s['spearman']:.2f}; searched-plan "
                        f"regret {(s['searched_regret'] or 0) * 100:.1f}% ({s['searched_plan']})"]
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--random", type=int, default=3)
    ap.add_argument("--models", default="gpt2,llama")
    ap.add_argument("--quick", action="store_true", help="one uniform plan per dimension, 1 random, the searched")
    ap.add_argument("--quickstart", action="store_true", help="also the 4-process quick-start configuration")
    ap.add_argument("--no-two", action="store_true", help="skip the 2-process plan sets")
    ap.add_argument("--out", default="")
    ap.add_argument("--report", default="", metavar="FILE.jsonl", help="print markdown tables of a result file")
    args = ap.parse_args()
    if args.report:
        print(report(args.report))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = open(args.out, "a", encoding="utf-8") if args.out else None  # noqa: SIM115

    def sink(row):
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    sink({"started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg(), "cpus": os.cpu_count(),
          "autogroup": _autogroup()})
    if not args.no_two:
        for label in args.models.split(","):
            flavour, overrides, seq, gbs = MODELS[label]
            plans = uniform_plans(2, overrides["num_layers"], gbs)
            if args.quick:
                plans = [p for p in plans if p[0] in QUICK]
            plans += random_plans(2, overrides["num_layers"], gbs, 1 if args.quick else args.random, seed=len(label))
            run_model(label, flavour, overrides, seq, gbs, 2, plans, args, sink)
    if args.quickstart:
        ovr = {"num_layers": 4, "hidden_size": 128}
        plans = [p for p in uniform_plans(4, 4, 16) if p[0] in ("pp1_ddp", "pp1_zero3", "pp1_tp2_ddp",
                                                               "pp2_1f1b_ddp", "pp1_tp2_megatron_ddp")]
        run_model("quickstart", "gpt2-debug", ovr, 128, 16, 4, plans, args, sink)
    sink({"finished": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": os.getloadavg()})
    if out:
        out.close()


if __name__ == "__main__":
    main()
