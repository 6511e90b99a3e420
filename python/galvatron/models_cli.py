"""``galvatron models``: the model zoo as a table (name, family, parameters, layers, hidden size,
attention heads, aliases) or as JSON (``--json``). Every name and alias trains with ``galvatron
train --model NAME`` and searches with ``galvatron search --model NAME``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def rows() -> list[dict[str, Any]]:
    from galvatron import models

    out = []
    alias_of = models.aliases()
    for name in models.list():
        cfg = models.get_config(name)
        spec = models.spec(cfg)
        heads = cfg.num_heads
        out.append({"name": name, "family": cfg.family, "parameters": spec.param_count(),
                    "layers": len(spec.layer_types), "hidden": cfg.hidden_size,
                    "heads": list(heads) if isinstance(heads, tuple) else heads,
                    "aliases": sorted(a for a, n in alias_of.items() if n == name)})
    return out


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _cmd_models(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    cells = [("name", "family", "parameters", "layers", "hidden", "heads", "aliases")]
    for r in table:
        heads = ",".join(map(str, r["heads"])) if isinstance(r["heads"], list) else str(r["heads"])
        cells.append((r["name"], r["family"], _count(r["parameters"]), str(r["layers"]), str(r["hidden"]), heads,
                      ",".join(r["aliases"])))
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for c in cells:
        print("  ".join(v.rjust(w) if i in (2, 3, 4) else v.ljust(w)
                        for i, (v, w) in enumerate(zip(c, widths, strict=True))).rstrip())
    return 0


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo", description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print JSON (exact parameter counts)")
    p.set_defaults(func=_cmd_models)
