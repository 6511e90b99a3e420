"""``galvatron profile compare a.json b.json``: two model profiles side by side.

Typically the analytic profile (``galvatron profile model --analytic``) against a measured
one. Per layer type: parameters, forward/backward ms per sample (and the fixed part) per
degree, activation bytes per sample per sequence-parallel kind and degree; then the
embedding and head. ``rel`` is ``(b - a) / a``.
"""

from __future__ import annotations

import os

from galvatron.profiles.model import SP_KINDS, ModelProfile


def _rel(a: float, b: float) -> str:
    if a == 0:
        return "    n/a" if b != 0 else "   0.0%"
    return f"{(b - a) / abs(a) * 100:+6.1f}%"


def _row(label: str, a: float | None, b: float | None, fmt: str) -> str:
    if a is None or b is None:
        return f"  {label:<34} {'-' if a is None else format(a, fmt):>14} {'-' if b is None else format(b, fmt):>14}"
    return f"  {label:<34} {format(a, fmt):>14} {format(b, fmt):>14}  {_rel(a, b)}"


def _table(label: str, ta: dict, tb: dict, fmt: str) -> list[str]:
    return [_row(f"{label} d={d}", ta.get(d), tb.get(d), fmt) for d in sorted(set(ta) | set(tb))]


def compare_profiles(a: ModelProfile, b: ModelProfile, name_a: str = "a", name_b: str = "b") -> str:
    lines = [f"a = {name_a}: {a.model}, seq {a.seq_len}, {a.precision} ({a.source})",
             f"b = {name_b}: {b.model}, seq {b.seq_len}, {b.precision} ({b.source})"]
    if (a.model, a.seq_len, a.precision) != (b.model, b.seq_len, b.precision):
        lines.append("warning: the profiles describe different models, sequence lengths or precisions")
    lines.append(f"  {'quantity':<34} {'a':>14} {'b':>14}  rel (b-a)/a")
    lb = {lt.name: lt for lt in b.layer_types}
    for la in a.layer_types:
        other = lb.get(la.name)
        lines.append(f"layer type {la.name}" + ("" if other else "  (absent from b)"))
        if other is None:
            continue
        lines.append(_row("param_count", la.param_count, other.param_count, "d"))
        lines.append(_row("fwd_ms_fixed", la.fwd_ms_fixed, other.fwd_ms_fixed, ".4f"))
        lines += _table("fwd_ms_per_sample", la.fwd_ms_per_sample, other.fwd_ms_per_sample, ".4f")
        lines.append(_row("bwd_ms_fixed", la.bwd_ms_fixed, other.bwd_ms_fixed, ".4f"))
        lines += _table("bwd_ms_per_sample", la.bwd_ms_per_sample, other.bwd_ms_per_sample, ".4f")
        for kind in SP_KINDS:
            lines += _table(f"act_bytes/sample {kind}", la.act_bytes_per_sample.get(kind, {}),
                            other.act_bytes_per_sample.get(kind, {}), "d")
    ea, eb = a.embedding, b.embedding
    lines.append("embedding and head")
    for f in ("embed_param_count", "head_param_count", "tied_param_count"):
        lines.append(_row(f, getattr(ea, f), getattr(eb, f), "d"))
    for f in ("embed_fwd_ms_per_sample", "embed_bwd_ms_per_sample", "head_fwd_ms_per_sample",
              "head_bwd_ms_per_sample"):
        lines += _table(f, getattr(ea, f), getattr(eb, f), ".4f")
    for f in ("embed_act_bytes_per_sample", "head_act_bytes_per_sample"):
        lines += _table(f, getattr(ea, f), getattr(eb, f), "d")
    return "\n".join(lines)


def compare_files(path_a: str | os.PathLike[str], path_b: str | os.PathLike[str]) -> str:
    return compare_profiles(ModelProfile.load(path_a), ModelProfile.load(path_b), os.fspath(path_a),
                            os.fspath(path_b))
