"""``galvatron visualize``: argument parsing and the command (report, PNGs, or --serve)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from galvatron.plan import Plan


def add_visualize_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "visualize", help="render a plan's predicted memory and time",
        description="Render a plan's predicted per-stage memory, per-layer strategy and step-time breakdown "
                    "next to the best uniform plan (or --baseline), optionally against measured metrics, as one "
                    "self-contained HTML file (--out) and/or PNG images (--png). With --serve, open a local page "
                    "that re-runs the search as the memory budget, batch size, sequence length or device count "
                    "change.")
    p.add_argument("plan", nargs="?", help="plan JSON (ours or Galvatron-2's, detected)")
    p.add_argument("--model", help="model name (galvatron models) for the analytic model profile; default: "
                                    "the model the plan records")
    p.add_argument("--model-profile", help="a measured model profile JSON (instead of --model)")
    p.add_argument("--seq-len", type=int, default=None,
                   help="sequence length (default: the plan's recorded one, else the model's)")
    p.add_argument("--precision", default=None, choices=("bf16", "fp16", "fp32"),
                   help="default: the plan's precision (bf16 with --serve)")
    p.add_argument("--hardware", help="a measured hardware profile JSON")
    p.add_argument("--hardware-preset", default="a100-80g-sxm",
                   help="analytic hardware preset (a100-40g-sxm, a100-80g-sxm, h100-sxm, h200, cpu-gloo)")
    p.add_argument("--nodes", type=int, default=None, help="default: from the plan's world size (8 per node)")
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--memory-gb", type=float, default=None, help="per-device budget in GiB (default: device memory)")
    p.add_argument("--baseline", help="compare with this plan instead of searching the best uniform plan")
    p.add_argument("--no-baseline", action="store_true", help="show the plan alone")
    p.add_argument("--metrics", help="metrics.jsonl of a training run under the plan (predicted vs measured)")
    p.add_argument("--warmup-steps", type=int, default=1, help="steps left out of the measured step time")
    p.add_argument("--world-size", type=int, default=None, help="for Galvatron-2 plans that do not record it")
    p.add_argument("--title", default=None, help="report title (default: model and hardware)")
    p.add_argument("--out", help="write the HTML report here")
    p.add_argument("--png", metavar="DIR", help="write PNG images here (needs the 'viz' extra: matplotlib)")
    p.add_argument("--serve", action="store_true", help="serve the interactive search page on 127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="port for --serve (0: any free port)")
    p.add_argument("--global-batch-size", type=int, default=8, help="--serve: initial global batch size")
    p.set_defaults(func=run)
    return p


def _hardware(args: argparse.Namespace, world_size: int | None) -> Any:
    from galvatron.profiles import HardwareProfile, hardware_preset

    if args.hardware:
        return HardwareProfile.load(args.hardware)
    gpn, nodes = args.gpus_per_node, args.nodes
    if gpn is None:
        gpn = world_size // nodes if world_size and nodes else min(world_size or 8, 8)
    if nodes is None:
        nodes = max(1, (world_size or gpn) // gpn)
    return hardware_preset(args.hardware_preset, num_nodes=nodes, gpus_per_node=gpn)


def _model(args: argparse.Namespace, hw: Any, precision: str, plan: Plan | None = None) -> Any:
    """The model profile: --model-profile, else --model, else the model the plan records (a
    run's plan.json names its model, overrides and sequence length)."""
    from galvatron.profiles import ModelProfile, model_profile

    if args.model_profile:
        return ModelProfile.load(args.model_profile)
    record = (plan.model if plan is not None else None) or {}
    name = args.model or record.get("name")
    if not name:
        raise ValueError("--model (or --model-profile) is required: this plan does not record its model")
    overrides = (record.get("overrides") or {}) if name == record.get("name") else {}
    seq = args.seq_len or (record.get("seq_len") if name == record.get("name") else None)
    mp = model_profile(name, seq_len=seq, hardware=hw, precision=precision, **overrides)
    if args.seq_len is None:
        print(f"sequence length {mp.seq_len} " + ("(recorded in the plan)" if seq else
              "(the model's default; pass --seq-len for the one the plan was searched with)"))
    return mp


def _memory_gb(args: argparse.Namespace) -> float | None:
    """--memory-gb checked before any work or file: -3, 0, inf and nan are refused."""
    from galvatron._validate import MAX_BYTES, check_float

    if args.memory_gb is None:
        return None
    return check_float(args.memory_gb, "--memory-gb", 0.0, MAX_BYTES / 2**30, lo_open=True)


def run(args: argparse.Namespace) -> int:
    _memory_gb(args)
    if args.serve:
        return _serve(args)
    if not args.plan:
        raise ValueError("visualize: give a PLAN.json (or --serve for the interactive page)")
    if not args.out and not args.png:
        raise ValueError("visualize: give --out REPORT.html and/or --png DIR")
    if args.png:  # fail before any work when matplotlib is missing
        from galvatron.visualize.png import require_matplotlib

        require_matplotlib()
    from galvatron.plan_io import load_plan
    from galvatron.visualize import load_metrics, report_data, write_report

    plan = load_plan(args.plan, world_size=args.world_size)
    hw = _hardware(args, plan.world_size)
    mp = _model(args, hw, args.precision or plan.precision.value, plan)
    baseline: Plan | str | None = "search"
    if args.no_baseline:
        baseline = None
    elif args.baseline:
        baseline = load_plan(args.baseline, world_size=plan.world_size)
    metrics = load_metrics(args.metrics) if args.metrics else None
    budget = None if args.memory_gb is None else int(_memory_gb(args) * 2**30)
    data = report_data(plan, mp, hw, memory_budget_bytes=budget, baseline=baseline, metrics=metrics,
                       warmup_steps=args.warmup_steps, plan_label=os.path.basename(args.plan),
                       baseline_label="baseline" if args.baseline else "best uniform plan", title=args.title)
    if args.out:
        write_report(args.out, data)
        print(f"wrote {args.out}")
    if args.png:
        from galvatron.visualize.png import write_pngs

        for path in write_pngs(data, args.png):
            print(f"wrote {path}")
    if data["speedup"] is not None:
        print(f"predicted speed-up over the {data['baseline']['label']}: {data['speedup']:.3f}x")
    elif data["baseline_note"]:
        print(data["baseline_note"])
    return 0


def _serve(args: argparse.Namespace) -> int:
    from galvatron import models
    from galvatron.profiles import HardwareProfile
    from galvatron.visualize.server import ServeConfig, serve

    if args.plan:
        raise ValueError("--serve searches plans itself; do not give a PLAN.json")
    model = args.model or "gpt2-small"
    if model not in models.list(aliases=True):
        raise ValueError(f"--model {model!r} is unknown; accepted: {', '.join(models.list(aliases=True))}")
    hw = HardwareProfile.load(args.hardware) if args.hardware else None
    cfg = ServeConfig(model=model, hardware_preset=args.hardware_preset, hardware=hw,
                      nodes=hw.num_nodes if hw else (args.nodes or 1),
                      gpus_per_node=hw.gpus_per_node if hw else (args.gpus_per_node or 8),
                      memory_gb=args.memory_gb, global_batch_size=args.global_batch_size, seq_len=args.seq_len,
                      precision=args.precision or "bf16")
    return serve(cfg, port=args.port)
