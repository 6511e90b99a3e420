"""``galvatron profile {hardware,model,compare}``: argparse front of the profilers.

``add_profile_parser(subparsers)`` is called by :mod:`galvatron.cli`. User errors are
``ValueError`` (printed by the main CLI as one line, exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any


def _ints(text: str | None, name: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"--{name}: expected a comma list of integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"--{name}: expected positive integers, got {text!r}")
    return vals


def _overrides(items: list[str] | None) -> dict[str, Any]:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _check_out(path: str | None) -> None:
    """Fail before a long measurement, not after it, when --out cannot be written."""
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"--out: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out: directory {parent} is not writable")


def _cmd_hardware(args: argparse.Namespace) -> int:
    from galvatron.profiler.hardware import HardwareOptions
    from galvatron.profiler.launch import profile_hardware

    _check_out(args.out)
    sizes = _ints(args.sizes, "sizes")
    opts = HardwareOptions(backend=args.backend, quick=args.quick, sizes=sizes, warmup=args.warmup,
                           repeats=args.repeats, simulate_nodes=args.nodes, timeout_s=args.timeout,
                           verbose=not args.quiet)
    prof = profile_hardware(args.nproc, opts, use_cache=not args.no_cache, name=args.name)
    if prof is None:  # a non-zero torchrun rank
        return 0
    if args.out:
        prof.save(args.out)
    print(prof.summary())
    print(f"overlap_slowdown {prof.overlap_slowdown:.3f}, optimizer {prof.optimizer_ms_per_param * 1e6:.3f} ns/param, "
          "peak TFLOP/s " + ", ".join(f"{k} {v:.4g}" for k, v in prof.peak_tflops.items()))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    from galvatron.profiler.model import ModelProfilerOptions, profile_model

    _check_out(args.out)
    if args.analytic:
        from galvatron.profiles import HardwareProfile, model_profile

        hw = HardwareProfile.load(args.hardware) if args.hardware else None
        prof = model_profile(args.model, seq_len=args.seq_len, hardware=hw, precision=args.dtype,
                             max_degree=args.max_degree, **_overrides(args.set))
        print(f"analytic profile of {prof.model}: seq {prof.seq_len}, {prof.precision}, "
              f"{prof.num_layers} layers")
        if args.out:
            prof.save(args.out)
            print(f"wrote {args.out}")
        return 0
    opts = ModelProfilerOptions(batch_sizes=_ints(args.batch_sizes, "batch-sizes") or (1, 2, 4),
                                max_degree=args.max_degree, warmup=args.warmup, repeats=args.repeats,
                                device=args.device, checkpoint=not args.no_checkpoint, verbose=not args.quiet,
                                extra_seq_lens=_ints(args.extra_seq_lens, "extra-seq-lens") or (),
                                processes=args.processes)
    prof = profile_model(args.model, seq_len=args.seq_len, precision=args.dtype, opts=opts,
                         **_overrides(args.set))
    if args.out:
        prof.save(args.out)
        print(f"wrote {args.out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from galvatron.profiler.compare import compare_files

    print(compare_files(args.a, args.b))
    return 0


def _cmd_refine(args: argparse.Namespace) -> int:
    from galvatron.profiler import refine as R
    from galvatron.profiles import HardwareProfile, ModelProfile

    def base(flag: str, name: str, cls: Any) -> Any:
        path = flag or next((os.path.join(r, name) for r in args.runs
                             if os.path.isdir(r) and os.path.isfile(os.path.join(r, name))), None)
        return cls.load(path) if path else None

    if not os.path.isdir(args.out) and os.path.exists(args.out):
        raise ValueError(f"--out: {args.out} exists and is not a directory")
    hw = base(args.hardware, "hardware.json", HardwareProfile)
    mp = base(args.model_profile, "model_profile.json", ModelProfile)
    if hw is None or mp is None:
        ehw, emp = R.embedded_profiles(args.runs)
        hw, mp = hw or ehw, mp or emp
    if hw is None or mp is None:
        raise ValueError("refine: the base profiles are needed: --hardware and --model-profile (or a run "
                         "directory holding hardware.json and model_profile.json, or a check report "
                         "recording them)")
    ref = R.fit_scales(R.load_observations(args.runs, hw, mp, skip=args.skip))
    hw2, mp2 = R.refined_profiles(hw, mp, ref)
    os.makedirs(args.out, exist_ok=True)
    hw2.save(os.path.join(args.out, "hardware.json"))
    mp2.save(os.path.join(args.out, "model_profile.json"))
    for k in R.KINDS:
        print(f"{k + '_scale':<16} {ref.scales[k]:.4f}" + ("" if ref.fitted[k] else "  (not fitted: no measurement)"))
    print(f"{ref.observations} observations; median |relative error| {ref.residual_before * 100:.1f}% before, "
          f"{ref.residual_after * 100:.1f}% after")
    print(f"wrote {os.path.join(args.out, 'hardware.json')} and {os.path.join(args.out, 'model_profile.json')}")
    return 0


def add_profile_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("profile", help="profile the hardware or a model",
                              description="Measure the hardware or a model and write the profile JSON "
                                          "the search reads.")
    sub = p.add_subparsers(dest="profile_command", metavar="{hardware,model,compare,refine}")
    sub.required = True

    hw = sub.add_parser("hardware", help="measure collectives, overlap, compute and memory",
                        description="Measure collective alpha/bandwidth for every op, group size and "
                                    "placement, compute/communication overlap, matmul TFLOP/s, device memory "
                                    "and the AdamW step. Run under torchrun on a cluster (every rank runs "
                                    "this command; rank 0 writes), or with --nproc N to start N local "
                                    "processes.")
    hw.add_argument("--nproc", type=int, default=None, help="local processes to start (default 2; not "
                                                            "with torchrun)")
    hw.add_argument("--out", help="write the hardware profile JSON here")
    hw.add_argument("--backend", choices=("nccl", "gloo"), default=None,
                    help="default: nccl with CUDA, else gloo")
    hw.add_argument("--quick", action="store_true", help="few sizes and repeats (CPU CI: seconds)")
    hw.add_argument("--sizes", default=None, help="message sizes in bytes, comma list")
    hw.add_argument("--warmup", type=int, default=None)
    hw.add_argument("--repeats", type=int, default=None)
    hw.add_argument("--nodes", type=int, default=1, help="local runs: treat the processes as this many "
                                                         "nodes (tests the inter-node code path)")
    hw.add_argument("--timeout", type=float, default=300.0, help="seconds before a hung rank aborts the run")
    hw.add_argument("--name", default=None, help="profile name (default: device and world)")
    hw.add_argument("--no-cache", action="store_true", help="re-measure even if a cached result exists")
    hw.add_argument("--quiet", action="store_true", help="no progress output")
    hw.set_defaults(func=_cmd_hardware)

    m = sub.add_parser("model", help="measure per layer type time and memory of a model",
                       description="Measure forward/backward time (several micro-batch sizes, each tp / "
                                   "Ulysses degree's local shard, with and without checkpointing) and "
                                   "activation/parameter memory per layer type, embedding and head; fit "
                                   "fixed + per-sample times and write a ModelProfile.")
    m.add_argument("--model", required=True, help="model name (galvatron.models.list())")
    m.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the model's)")
    m.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    m.add_argument("--batch-sizes", default="1,2,4", help="micro-batch sizes to time, comma list")
    m.add_argument("--extra-seq-lens", default=None,
                   help="also time every layer type at these sequence lengths (raw points in "
                        "measurements.seq_scaling; the tables stay at --seq-len)")
    m.add_argument("--max-degree", type=int, default=8, help="largest tp / sp degree tabulated")
    m.add_argument("--warmup", type=int, default=2)
    m.add_argument("--repeats", type=int, default=5)
    m.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    m.add_argument("--no-checkpoint", action="store_true", help="skip the checkpointed (recompute) timing")
    m.add_argument("--processes", type=int, default=1,
                   help="CPU: local processes that will train at once; with more than the cores, times are "
                        "scaled by processes / cores (default 1)")
    m.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config override (repeatable)")
    m.add_argument("--analytic", action="store_true",
                   help="write the analytic profile (model spec + hardware peak) instead of measuring")
    m.add_argument("--hardware", default=None, help="with --analytic: hardware profile JSON for the compute "
                                                     "peak (default: the a100-80g-sxm preset)")
    m.add_argument("--out", help="write the model profile JSON here")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=_cmd_model)

    c = sub.add_parser("compare", help="two model profiles side by side (e.g. analytic vs measured)",
                       description="Print per layer type parameters, fwd/bwd ms and activation bytes of two "
                                   "model profiles, with relative differences (b vs a).")
    c.add_argument("a", help="model profile JSON (e.g. analytic)")
    c.add_argument("b", help="model profile JSON (e.g. measured)")
    c.set_defaults(func=_cmd_compare)

    r = sub.add_parser("refine", help="fit the profiles' compute, communication and optimizer scales to "
                                      "measured runs",
                       description="Fit three constants (compute_scale, comm_scale, optimizer_scale) to "
                                   "measured runs by least squares on relative errors and write the refined "
                                   "hardware and model profiles (hardware.json, model_profile.json in --out) "
                                   "for `galvatron search --hardware ... --model-profile ...`. RUN: a "
                                   "`galvatron check --json` report (or a directory holding check.json), or a "
                                   "training run directory (metrics.jsonl, plan.json).")
    r.add_argument("runs", nargs="+", metavar="RUN")
    r.add_argument("--hardware", default="", help="base hardware profile JSON (default: hardware.json of a "
                                                  "RUN directory)")
    r.add_argument("--model-profile", default="", help="base model profile JSON (default: model_profile.json "
                                                       "of a RUN directory)")
    r.add_argument("--skip", type=int, default=2, help="training runs: first steps left out (default 2)")
    r.add_argument("--out", required=True, help="directory for the refined hardware.json and model_profile.json")
    r.set_defaults(func=_cmd_refine)
    return p
