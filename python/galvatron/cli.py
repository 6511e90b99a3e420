"""The ``galvatron`` command line: ``galvatron {search,profile,train,visualize,plan,data,check} ...``.

Each subcommand lives in a small ``_cmd_*`` function; user errors (``ValueError``) are printed
as one line ``galvatron: error: ...`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from galvatron._validate import INT32_MAX, short
from galvatron.check.cli import add_check_parser
from galvatron.models_cli import add_models_parser
from galvatron.plan_io import file_format, load_plan, save_plan
from galvatron.profiler.cli import add_profile_parser
from galvatron.visualize.cli import add_visualize_parser


def _cmd_plan_show(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan, world_size=args.world_size, megatron_sp=args.megatron_sp)
    if args.json:
        print(plan.to_json(), end="")
    else:
        print(plan.summary())
    return 0


def _cmd_plan_convert(args: argparse.Namespace) -> int:
    target = args.to or ("galvatron" if file_format(args.input) == "galvatron2" else "galvatron2")
    plan = load_plan(args.input, world_size=args.world_size, megatron_sp=args.megatron_sp)
    save_plan(plan, args.output, target)
    print(f"wrote {args.output} ({'Galvatron-2' if target == 'galvatron2' else 'Galvatron'} format, "
          f"{plan.num_layers} layers, world_size={plan.world_size})")
    return 0


def _cmd_plan_validate(args: argparse.Namespace) -> int:
    plan = load_plan(args.plan, world_size=args.world_size, megatron_sp=args.megatron_sp)
    plan.validate(world_size=args.world_size, num_layers=args.num_layers)
    print(f"{args.plan}: valid plan for {plan.world_size} devices, {plan.num_layers} layers")
    return 0


_DP_TYPES = "ddp,zero1,zero2,zero3"


def _parse_list(text: str | None, name: str) -> list[int] | None:
    """'64', '16,32,64' or '16:128:16' (start:stop:step, stop included) -> list of ints.

    The count is checked before the list is built: '1:100000000' is refused at once."""
    from galvatron.search import MAX_LIST_VALUES

    if text is None:
        return None
    usage = f"--{name}: expected N, N,M,... or START:STOP[:STEP] of integers 1 to {INT32_MAX}, got {short(text)}"
    try:
        if ":" in text:
            a, b, *c = (int(x) for x in text.split(":"))
            if len(c) > 1 or (c and c[0] < 1):
                raise ValueError
            values: range | list[int] = range(a, b + 1, c[0] if c else 1)
        else:
            if text.count(",") >= MAX_LIST_VALUES:
                raise ValueError(f"--{name}: more than {MAX_LIST_VALUES} values; narrow it")
            values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith("--") else usage) from None
    if len(values) > MAX_LIST_VALUES:
        raise ValueError(f"--{name}: {text} gives {len(values)} values; accepted: at most {MAX_LIST_VALUES} "
                         "(narrow it, e.g. with a step: 1024:65536:1024)")
    if not values or min(values) < 1 or max(values) > INT32_MAX:
        raise ValueError(usage)
    return list(values)


def _cmd_search(args: argparse.Namespace) -> int:
    import galvatron
    from galvatron.profiles import (
        HardwareProfile,
        ModelProfile,
        hardware_from_galvatron,
        hardware_preset,
        model_profile,
    )

    if args.hardware and args.galvatron_profiles:
        raise ValueError("--hardware and --galvatron-profiles are exclusive")
    if args.hardware:
        hw = HardwareProfile.load(args.hardware)
    elif args.galvatron_profiles:
        nodes, gpn = _galvatron_layout(args)
        hw = hardware_from_galvatron(args.galvatron_profiles, num_nodes=nodes, gpus_per_node=gpn,
                                     device_memory_gb=args.memory_gb or 80.0)
    else:
        hw = hardware_preset(args.hardware_preset, num_nodes=args.nodes or 1, gpus_per_node=args.gpus_per_node or 8)
    if hw.derived_sizes:
        print("note: the hardware profile was not measured at these group sizes; their collectives are "
              f"interpolated from the measured sizes (docs/cost_model.md): {hw.derived_sizes}", flush=True)
    if args.model_profile:
        mp = ModelProfile.load(args.model_profile)
        if args.seq_len and args.seq_len != mp.seq_len:
            mp = mp.at_seq_len(args.seq_len)
    elif args.galvatron_profiles:
        mp = _galvatron_model(args)
    else:
        if not args.model:
            raise ValueError("--model (or --model-profile) is required")
        mp = model_profile(args.model, seq_len=args.seq_len, hardware=hw, precision=args.precision)
    space = {"max_tp": args.max_tp, "max_pp": args.max_pp, "max_sp": args.max_sp,
             "dp_types": args.dp_types.split(","), "allow_ulysses": not args.no_ulysses,
             "allow_checkpoint": not args.no_checkpoint, "schedules": args.schedules.split(","),
             "allow_selective_checkpoint": not (args.no_checkpoint or args.no_selective_checkpoint),
             "num_threads": args.threads}
    if args.pp_split is not None:
        space["pp_split"] = args.pp_split
    if args.galvatron2_compatible:
        space["galvatron2_compatible"] = True
        if args.dp_types == _DP_TYPES:  # the default list: Galvatron-2's own types
            space["dp_types"] = ["ddp", "zero2", "zero3"]
    mbs = _parse_list(args.num_microbatches, "num-microbatches")
    if mbs:
        space["num_microbatches"] = mbs
    print(f"searching {mp.model} (seq {mp.seq_len}, {mp.precision}, {mp.num_layers} layers) on "
          f"{hw.num_nodes}x{hw.gpus_per_node} {hw.name} ...", flush=True)
    res = galvatron.search(mp, hw, memory_gb=args.memory_gb,
                           global_batch_size=_parse_list(args.global_batch_size, "global-batch-size"),
                           memory_headroom_gb=args.memory_headroom_gb, **space)
    print(res.plan.replace(predicted=None).summary())  # the prediction follows, with its breakdown
    print("predicted " + res.predicted.summary().replace("\n", "\n  "))
    if res.best_uniform is not None:
        print(f"best uniform plan: {res.best_uniform.predicted.samples_per_s:.2f} samples/s "
              f"(speed-up of the searched plan: {res.speedup_over_uniform:.3f}x)")
        print("  " + res.best_uniform.plan.summary().replace("\n", "\n  "))
    st = res.stats
    print(f"search time {res.search_time_s:.3f} s ({st['tasks']} tasks, {st['strategies']} strategies, "
          f"{st['dp_sweeps']} DP sweeps, {st['frontier_entries']} frontier entries)")
    if args.out:
        plan = res.plan
        from galvatron import models

        if args.model in models.list(aliases=True) and not args.model_profile:  # the plan names its model
            plan = plan.replace(model={"name": models.get_config(args.model).name, "overrides": {},
                                       "seq_len": mp.seq_len})
        try:
            save_plan(plan, args.out, args.format)
        except ValueError as e:
            if args.format != "galvatron2" or args.galvatron2_compatible:
                raise
            raise ValueError(f"{args.out}: {e} (--galvatron2-compatible searches only plans that "
                             "export to that format)") from None
        print(f"wrote {args.out} ({'Galvatron-2' if args.format == 'galvatron2' else 'Galvatron'} format)")
    return 0


def _galvatron_layout(args: argparse.Namespace) -> tuple[int, int]:
    """Nodes and devices per node for a Galvatron-2 profile directory: --nodes/--gpus-per-node,
    else the one ``{N}nodes_{G}gpus_per_node`` layout its file names give."""
    import os

    from galvatron.profiles.galvatron_import import layouts_in

    d = args.galvatron_profiles
    if not os.path.isdir(d):
        raise ValueError(f"--galvatron-profiles {d}: no such directory (give a directory of Galvatron-2 profile "
                         "JSON files, e.g. examples/galvatron2_profiles)")
    if args.nodes and args.gpus_per_node:
        return args.nodes, args.gpus_per_node
    found = [(n, g) for n, g in layouts_in(d) if args.nodes in (None, n) and args.gpus_per_node in (None, g)]
    if len(found) != 1:
        named = ", ".join(f"{n}nodes_{g}gpus_per_node" for n, g in layouts_in(d)) or "none"
        raise ValueError(f"--galvatron-profiles {d}: pass --nodes and --gpus-per-node (layouts in the file "
                         f"names: {named})")
    return found[0]


def _galvatron_model(args: argparse.Namespace):
    import glob
    import os

    from galvatron.profiles import model_from_galvatron

    d = args.galvatron_profiles
    comp = sorted(glob.glob(os.path.join(d, "computation_profiling_*.json")))
    mem = sorted(glob.glob(os.path.join(d, "memory_profiling_*.json")))
    if not comp or not mem:
        raise ValueError(f"--galvatron-profiles {d}: no computation_profiling_*.json / memory_profiling_*.json; "
                         "pass --model to use the analytic model profile with these hardware files")
    if not args.num_layers:
        raise ValueError("--num-layers is required with Galvatron-2 model profiles")
    return model_from_galvatron(comp[0], mem[0], seq_len=args.seq_len or 2048,
                                      model=args.model or "galvatron-model", num_layers=args.num_layers,
                                      num_heads=args.num_heads, hidden_size=args.hidden_size)


def _add_search_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search the fastest plan that fits in memory",
                       description="Search the hybrid-parallel plan with the highest predicted throughput "
                                   "that fits the per-device memory budget, and print it with its "
                                   "predicted time and memory breakdown.")
    p.add_argument("--model", help="model name (galvatron.models.list()) for the analytic model profile")
    p.add_argument("--model-profile", help="a measured model profile JSON (instead of --model)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the model's)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--nodes", type=int, default=None,
                   help="default 1, or what the --galvatron-profiles file names say")
    p.add_argument("--gpus-per-node", type=int, default=None,
                   help="default 8, or what the --galvatron-profiles file names say")
    p.add_argument("--memory-gb", type=float, default=None, help="per-device budget in GiB (default: device memory)")
    p.add_argument("--memory-headroom-gb", type=float, default=0.0, help="GiB kept free on top of the model")
    p.add_argument("--global-batch-size", default="8", help="N, N,M,... or START:STOP[:STEP]")
    p.add_argument("--num-microbatches", default=None, help="fixed value(s); default: every divisor of the batch")
    p.add_argument("--hardware", help="a measured hardware profile JSON")
    p.add_argument("--hardware-preset", default="a100-80g-sxm",
                   help="analytic hardware preset (a100-40g-sxm, a100-80g-sxm, h100-sxm, h200, cpu-gloo)")
    p.add_argument("--galvatron-profiles", help="directory of Galvatron-2 profile JSON files")
    p.add_argument("--num-layers", type=int, default=None, help="layer count (Galvatron-2 model profiles)")
    p.add_argument("--num-heads", type=int, default=None, help="attention heads (Galvatron-2 model profiles)")
    p.add_argument("--hidden-size", type=int, default=None, help="hidden size (Galvatron-2 model profiles)")
    p.add_argument("--max-tp", type=int, default=8)
    p.add_argument("--max-pp", type=int, default=64)
    p.add_argument("--max-sp", type=int, default=8)
    p.add_argument("--dp-types", default=_DP_TYPES)
    p.add_argument("--schedules", default="1f1b", help="comma list of gpipe, 1f1b, interleaved_1f1b")
    p.add_argument("--pp-split", default=None, choices=("searched", "even"),
                   help="layer split across pipeline stages (default: searched; even with "
                        "--galvatron2-compatible)")
    p.add_argument("--no-ulysses", action="store_true")
    p.add_argument("--no-checkpoint", action="store_true", help="no activation checkpointing at all")
    p.add_argument("--no-selective-checkpoint", action="store_true",
                   help="full checkpointing only (no selective)")
    p.add_argument("--threads", type=int, default=0, help="search threads (0: all cores)")
    p.add_argument("--galvatron2-compatible", action="store_true",
                   help="only plans Galvatron-2's runtime executes (one Megatron-SP switch, even split, "
                        "ddp|zero2 + zero3, adjacent ranks, gpipe/1f1b): they always export with "
                        "--format galvatron2")
    p.add_argument("--out", help="write the plan JSON here")
    p.add_argument("--format", default="galvatron", choices=("galvatron", "galvatron2"),
                   help="format of --out: galvatron (ours) or galvatron2 (Galvatron-2's galvatron_config)")
    p.set_defaults(func=_cmd_search)


def _add_plan_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="inspect, validate and convert plan files",
                       description="Inspect, validate and convert plan files (ours or Galvatron-2's).")
    psub = p.add_subparsers(dest="plan_command", metavar="{show,convert,validate}")
    psub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--world-size", type=int, default=None,
                        help="number of devices (needed for Galvatron-2 files that do not record it)")
    common.add_argument("--megatron-sp", action=argparse.BooleanOptionalAction, default=None,
                        help="Galvatron-2 input: whether its tp > 1 layers run with Megatron sequence "
                             "parallelism (default: the file's sequence_parallel key, else on, as "
                             "Galvatron-2's runtime does)")

    show = psub.add_parser("show", parents=[common], help="print a plan as a table",
                           description="Print a plan as a table: stages, layer runs, tp/sp/dp/ZeRO/ckpt.")
    show.add_argument("plan", help="plan JSON (Galvatron or Galvatron-2 format, detected)")
    show.add_argument("--json", action="store_true", help="print the normalised plan JSON instead")
    show.set_defaults(func=_cmd_plan_show)

    conv = psub.add_parser("convert", parents=[common], help="convert between our and Galvatron-2's format",
                           description="Convert a plan between the Galvatron format and Galvatron-2's "
                                       "galvatron_config JSON. The direction is detected from the input.")
    conv.add_argument("input")
    conv.add_argument("output")
    conv.add_argument("--to", choices=("galvatron", "galvatron2"), default=None,
                      help="output format (default: the other one)")
    conv.set_defaults(func=_cmd_plan_convert)

    val = psub.add_parser("validate", parents=[common], help="check a plan against a world size / model",
                          description="Check every plan rule; exit 2 with the reason if one fails.")
    val.add_argument("plan")
    val.add_argument("--num-layers", type=int, default=None, help="layer count of the model")
    val.set_defaults(func=_cmd_plan_validate)


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from galvatron.training.data import prepare

    meta = prepare(args.inputs, args.out, tokenizer=args.tokenizer, hf_dataset=args.hf_dataset,
                   text_field=args.text_field, split=args.split)
    print(f"wrote {args.out}/tokens.bin: {meta['num_tokens']:,} tokens ({meta['dtype']}, vocabulary "
          f"{meta['vocab_size']}, tokenizer {meta['tokenizer']})")
    return 0


def _add_train_and_data_commands(sub: argparse._SubParsersAction) -> None:
    from galvatron.train import add_arguments

    train = sub.add_parser("train", help="train a model under a plan (python -m galvatron.train)",
                           description="Search (or load) a plan and train with it; see docs/training.md. "
                                       "Extra --section.key VALUE arguments override the configuration.")
    add_arguments(train)
    data = sub.add_parser("data", help="prepare training data", description="Prepare training data.")
    dsub = data.add_subparsers(dest="data_command", metavar="{prepare}")
    dsub.required = True
    prep = dsub.add_parser("prepare", help="tokenize text files into a token file",
                           description="Tokenize UTF-8 text files and/or a Hugging Face dataset into "
                                       "DIR/tokens.bin (uint16/uint32) + meta.json.")
    prep.add_argument("inputs", nargs="*", help="text files")
    prep.add_argument("--hf-dataset", help="a Hugging Face dataset (needs the datasets package): a save_to_disk "
                                           "directory, BUILDER:FILES (json:data.jsonl, parquet:*.parquet, csv:..., "
                                           "text:...) or a Hub name")
    prep.add_argument("--text-field", default="text", help="the dataset field holding the text (default text)")
    prep.add_argument("--split", default="train", help="the dataset split (default train)")
    prep.add_argument("--out", required=True, help="output directory")
    prep.add_argument("--tokenizer", default="byte", help="byte (built in), tiktoken:NAME or hf:PATH")
    prep.set_defaults(func=_cmd_data_prepare)


def build_parser() -> argparse.ArgumentParser:
    from galvatron import __version__

    parser = argparse.ArgumentParser(
        prog="galvatron",
        description="Automatic hybrid parallelism for Transformer training: profile, search, train.",
    )
    parser.add_argument("--version", action="version", version=f"galvatron {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{search,profile,train,visualize,plan,data,models,check}")
    sub.required = True
    _add_search_command(sub)
    add_profile_parser(sub)
    _add_train_and_data_commands(sub)
    add_visualize_parser(sub)
    _add_plan_commands(sub)
    add_models_parser(sub)
    add_check_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"] and not {"-h", "--help"} & set(argv[1:]):
        from galvatron.train import main as train_main

        return train_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as e:
        print(f"galvatron: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `galvatron plan show x | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
