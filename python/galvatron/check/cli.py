"""``galvatron check PLAN.json [--model NAME] [--seq-len S] [--nproc N] [--steps K] [--fake] [--json OUT]``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["num_layers=4", "hidden_size=256"]`` -> ``{"num_layers": 4, "hidden_size": 256}``
    (values are JSON numbers/booleans/strings, else the text itself)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. --set num_layers=4")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _cmd_check(args: argparse.Namespace) -> int:
    from galvatron import check as C
    from galvatron.plan_io import load_plan
    from galvatron.training.launch import under_launcher

    plan = load_plan(args.plan)
    if args.precision:
        plan = plan.replace(precision=args.precision)
    overrides = parse_sets(args.set)
    if args.model is None:  # the model the plan was made for (plans written by search / train)
        if not plan.model:
            raise ValueError(f"--model: required ({args.plan} does not record the model it was made for)")
        args.model = plan.model["name"]
        overrides = {**plan.model.get("overrides", {}), **overrides}
        args.seq_len = args.seq_len or plan.model.get("seq_len")
    if args.fake:
        if not args.seq_len:
            raise ValueError("--seq-len: required with --fake")
        ranks = None if args.ranks is None else [int(r) for r in args.ranks.split(",")]
        report = C.check_fake(plan, args.model, args.seq_len, overrides, ranks=ranks,
                              hardware_preset=args.hardware_preset or None)
        print(C.format_fake(report))
    else:
        from galvatron.check.report import format_report

        report = C.check(plan, args.model, args.seq_len, overrides, nproc=args.nproc, steps=args.steps,
                         warmup=args.warmup, hardware=args.hardware or None,
                         hardware_preset=args.hardware_preset or None,
                         model_profile=args.model_profile or None)
        if under_launcher():
            import torch.distributed as dist

            if dist.get_rank() != 0:
                return 0
        print(format_report(report))
    if args.json:
        from galvatron._io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_check_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="run a plan and compare predicted with measured time and memory",
        description="Run PLAN for a few steps (local processes, or the ranks of torchrun) and print, per "
                    "pipeline stage and rank, the cost model's prediction against the runtime's own "
                    "measurement: step time, compute, communication per kind, pipeline, optimizer, and "
                    "peak live tensor memory by kind. --fake: the runtime on fake tensors with a fake "
                    "process group of the plan's world size (no devices needed): peak memory per rank.")
    p.add_argument("plan", help="plan JSON (ours or Galvatron-2's)")
    p.add_argument("--model", default=None, help="model flavour, e.g. gpt2-debug, llama2-7b (default: the "
                                                 "model the plan records, as plans of search and train do)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the model's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="model config override, e.g. --set num_layers=4 (repeatable)")
    p.add_argument("--nproc", type=int, default=None, help="local processes (default: the plan's world size)")
    p.add_argument("--steps", type=int, default=5, help="measured steps (median reported; default 5)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps, not measured (default 2)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="override the plan's precision")
    p.add_argument("--fake", action="store_true", help="fake tensors + fake process group: memory only")
    p.add_argument("--ranks", default=None, help="--fake: comma-separated ranks (default: first and last "
                                                "rank of every stage)")
    p.add_argument("--hardware", default="", help="hardware profile JSON for the prediction")
    p.add_argument("--hardware-preset", default="", help="hardware preset for the prediction")
    p.add_argument("--model-profile", default="", help="model profile JSON for the prediction")
    p.add_argument("--json", default="", metavar="OUT", help="write the report as JSON")
    p.set_defaults(func=_cmd_check)
