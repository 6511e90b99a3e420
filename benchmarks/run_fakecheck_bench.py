"""Peak memory per rank at real scale without devices: ``galvatron check --fake`` on the plan
sets of :mod:`galvatron.check.plansets` (llama2-7b on 8 devices, llama2-70b on 64, seq 2048).

Usage: ``python benchmarks/run_fakecheck_bench.py [--only 7b|70b] [--out FILE.jsonl]`` -- one
JSON line per (plan, rank measured): predicted and measured peak live tensor bytes and the
split by kind; a summary line per model with the worst |error|. Target: within 3% on every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def main() -> None:
    from galvatron.check import check_fake, format_fake
    from galvatron.check.plansets import (
        SMALL_OVERRIDES,
        llama2_7b_4layers_on_8,
        llama2_7b_on_8,
        llama2_70b_on_64,
    )

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=("7b", "70b", "small"), default=None,
                    help="small: the fast test's plans (llama2-7b shapes, 4 layers; use --seq-len 512)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--procs", type=int, default=2, help="ranks simulated at once")
    ap.add_argument("--first-only", action="store_true", help="only the first rank of every stage")
    ap.add_argument("--plans", default="", help="comma-separated plan keys (default: all)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per simulated rank (default 900)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    sets = [("llama2-7b", llama2_7b_on_8()), ("llama2-70b", llama2_70b_on_64())]
    overrides, small_ranks = None, {}
    if args.only == "small":
        small = llama2_7b_4layers_on_8()
        sets, overrides = [("llama2-7b", [(k, p) for k, p, _ in small])], SMALL_OVERRIDES
        small_ranks = {k: r for k, _, r in small}
    elif args.only:
        sets = [s for s in sets if s[0].endswith(args.only)]
    out = open(args.out, "a", encoding="utf-8") if args.out else None  # noqa: SIM115
    for model, plans in sets:
        worst = 0.0
        for key, plan in plans:
            if args.plans and key not in args.plans.split(","):
                continue
            t0 = time.perf_counter()
            ranks = [s * plan.devices_per_stage for s in range(plan.pp)] if args.first_only else None
            rep = check_fake(plan, model, args.seq_len, overrides=overrides, ranks=small_ranks.get(key, ranks),
                             parallel_procs=args.procs, timeout_s=args.timeout)
            print(format_fake(rep), file=sys.stderr, flush=True)
            for r in rep["ranks"]:
                line = {"model": model, "plan": key, "world_size": plan.world_size, "seq_len": args.seq_len,
                        "rank": r["rank"], "stage": r["stage"], "predicted_peak_bytes": r["predicted_peak_bytes"],
                        "measured_peak_bytes": r["measured_peak_bytes"], "error": r["error"],
                        "predicted_bytes": r["predicted_bytes"], "measured_bytes": r["measured_bytes"]}
                print(json.dumps(line), flush=True)
                if out:
                    out.write(json.dumps(line) + "\n")
                worst = max(worst, abs(r["error"]))
            print(json.dumps({"model": model, "plan": key, "seconds": round(time.perf_counter() - t0, 1)}),
                  flush=True)
        summary = {"model": model, "summary": True, "worst_abs_error": worst, "target": 0.03}
        print(json.dumps(summary), flush=True)
        if out:
            out.write(json.dumps(summary) + "\n")
    if out:
        out.close()


if __name__ == "__main__":
    main()
