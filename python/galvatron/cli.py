"""The ``galvatron`` command line: ``galvatron {search,profile,train,visualize,plan} ...``.

Each subcommand lives in a small ``_cmd_*`` function; user errors (``ValueError``) are printed
as one line ``galvatron: error: ...`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from galvatron.plan import Plan, read_json


def load_any_plan(path: str, world_size: int | None = None, megatron_sp: bool | None = None) -> Plan:
    """Load our plan format or a Galvatron-2 plan, detected from its keys."""
    data = read_json(path)
    if isinstance(data, dict) and "version" not in data and ("pp_deg" in data or "tp_sizes_enc" in data):
        return Plan.from_galvatron_json(path, world_size=world_size, megatron_sp=megatron_sp)
    plan = Plan.load(path)
    if world_size is not None:
        plan.validate(world_size=world_size)
    return plan


def _cmd_plan_show(args: argparse.Namespace) -> int:
    plan = load_any_plan(args.plan, world_size=args.world_size, megatron_sp=args.megatron_sp or None)
    if args.json:
        print(plan.to_json(), end="")
    else:
        print(plan.summary())
    return 0


def _cmd_plan_convert(args: argparse.Namespace) -> int:
    data = read_json(args.input)
    is_galvatron2 = isinstance(data, dict) and "version" not in data and "pp_deg" in data
    target = args.to or ("galvatron" if is_galvatron2 else "galvatron2")
    plan = load_any_plan(args.input, world_size=args.world_size, megatron_sp=args.megatron_sp or None)
    if target == "galvatron2":
        plan.to_galvatron_json(args.output)
    else:
        plan.save(args.output)
    print(f"wrote {args.output} ({'Galvatron-2' if target == 'galvatron2' else 'Galvatron'} format, "
          f"{plan.num_layers} layers, world_size={plan.world_size})")
    return 0


def _cmd_plan_validate(args: argparse.Namespace) -> int:
    plan = load_any_plan(args.plan, world_size=args.world_size)
    plan.validate(world_size=args.world_size, num_layers=args.num_layers)
    print(f"{args.plan}: valid plan for {plan.world_size} devices, {plan.num_layers} layers")
    return 0


def _not_implemented(name: str):
    def run(args: argparse.Namespace) -> int:
        print(f"galvatron {name}: not implemented yet in this version", file=sys.stderr)
        return 2

    return run


def _add_plan_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="inspect, validate and convert plan files",
                       description="Inspect, validate and convert plan files (ours or Galvatron-2's).")
    psub = p.add_subparsers(dest="plan_command", metavar="{show,convert,validate}")
    psub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--world-size", type=int, default=None,
                        help="number of devices (needed for Galvatron-2 files that do not record it)")
    common.add_argument("--megatron-sp", action="store_true",
                        help="Galvatron-2 input: its tp layers use Megatron sequence parallelism")

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


def build_parser() -> argparse.ArgumentParser:
    from galvatron import __version__

    parser = argparse.ArgumentParser(
        prog="galvatron",
        description="Automatic hybrid parallelism for Transformer training: profile, search, train.",
    )
    parser.add_argument("--version", action="version", version=f"galvatron {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{search,profile,train,visualize,plan}")
    sub.required = True
    for name, text in (
        ("search", "search the fastest plan that fits in memory"),
        ("profile", "profile the hardware or a model"),
        ("train", "train a model under a plan"),
        ("visualize", "render a plan's predicted memory and time"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=_not_implemented(name))
    _add_plan_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
