"""A measured model profile at another sequence length.

``galvatron profile model --seq-len S0 --extra-seq-lens S1,S2`` times every layer type and
shard degree at several sequence lengths. :func:`at_seq_len` fits, per layer type and degree,
the per-sample compute time as ``a*s + b*s**2`` (the linear layers and the attention scores;
least squares over the measured lengths, ``a, b`` not forced positive but a negative
prediction falls back to linear scaling) and evaluates it at the requested length. The fixed
per-micro-batch time is kept. Activation bytes are scaled by the model spec's ratio
``act(s) / act(s0)`` for each sp kind and degree (the spec counts the tensors autograd saves,
including any ``s**2`` term), per-token quantities (the carry, Ulysses traffic, embedding and
head) linearly.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: model.py imports this module for ModelProfile.at_seq_len
    from galvatron.profiles.model import ModelProfile


def _per_sample_at(points: dict[int, list], degree: int) -> dict[int, float]:
    """{seq: [[batch, ms], ...]} of one degree -> {seq: ms per sample} by a fixed + slope fit."""
    from galvatron.profiler.fit import fit_fixed_per_sample

    out = {}
    for seq, by_degree in points.items():
        pts = by_degree.get(degree)
        if pts and len(pts) >= 2:
            _, slopes = fit_fixed_per_sample({degree: [(int(b), float(t)) for b, t in pts]})
            out[int(seq)] = slopes[degree]
    return out


def _quadratic(samples: dict[int, float], seq: int) -> float | None:
    """Least squares t(s) = a*s + b*s^2 through `samples`, evaluated at `seq`."""
    if len(samples) < 2:
        return None
    s1 = sum(s * s for s in samples)
    s2 = sum(s ** 3 for s in samples)
    s3 = sum(s ** 4 for s in samples)
    y1 = sum(t * s for s, t in samples.items())
    y2 = sum(t * s * s for s, t in samples.items())
    det = s1 * s3 - s2 * s2
    if det == 0:
        return None
    a = (y1 * s3 - y2 * s2) / det
    b = (s1 * y2 - s2 * y1) / det
    value = a * seq + b * seq * seq
    return value if value > 0 else None


def _spec_ratio(mp: ModelProfile, layer_name: str, seq: int):
    """act(seq) / act(mp.seq_len) from the model spec, per (kind, tp, sp); None when unknown."""
    try:
        from galvatron import models

        fields = {k: v for k, v in mp.model_config.items() if k not in ("name", "family")}
        base = models.get_config(mp.model)
        valid = {k: v for k, v in fields.items() if hasattr(base, k) and not isinstance(v, (list, dict))}
        spec = models.spec(base.replace(**valid) if valid else base)
        ls = spec.layer_specs[layer_name]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None

    def ratio(kind: str, d: int, cb: int) -> float:
        tp, sp = (1, d) if kind == "ulysses" else (d, 1)
        a0 = ls.act_bytes(1, mp.seq_len, cb, tp=tp, sp=sp, sp_kind=kind)
        a1 = ls.act_bytes(1, seq, cb, tp=tp, sp=sp, sp_kind=kind)
        return a1 / a0 if a0 else seq / mp.seq_len

    return ratio


def at_seq_len(mp: ModelProfile, seq: int) -> ModelProfile:
    """`mp` re-targeted to sequence length `seq` (see the module docstring)."""
    if seq == mp.seq_len:
        return mp
    if seq < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq}")
    scaling = mp.measurements.get("seq_scaling") or {}
    if not scaling:
        raise ValueError(f"this profile was measured at seq_len={mp.seq_len} only; measure it at the "
                         f"target length (galvatron profile model --seq-len {seq}) or add "
                         "--extra-seq-lens so other lengths can be fitted")
    out = copy.deepcopy(mp)
    lin = seq / mp.seq_len
    cb = 4 if mp.precision == "fp32" else 2
    for lt in out.layer_types:
        def raw(which: str, name: str = lt.name) -> dict[int, dict[int, list]]:
            return {int(s): {int(k): v for k, v in per_type.get(name, {}).get(which, {}).items()}
                    for s, per_type in scaling.items()}

        for table, points in ((lt.fwd_ms_per_sample, raw("fwd_ms")), (lt.bwd_ms_per_sample, raw("bwd_ms"))):
            for d in list(table):
                samples = _per_sample_at(points, d)
                samples[mp.seq_len] = table[d]
                fitted = _quadratic(samples, seq)
                table[d] = fitted if fitted is not None else table[d] * lin
        ratio = _spec_ratio(mp, lt.name, seq)
        for kind, by_degree in lt.act_bytes_per_sample.items():
            for d in list(by_degree):
                r = ratio(kind, d, cb) if ratio is not None else lin
                by_degree[d] = int(round(by_degree[d] * r))
        for kind, by_degree in lt.fsdp_act_bytes_per_sample.items():
            for d in list(by_degree):
                r = ratio(kind, d, cb) if ratio is not None else lin
                by_degree[d] = int(round(by_degree[d] * r))
        lt.carry_bytes_per_sample = int(round(lt.carry_bytes_per_sample * lin))
        lt.fsdp_carry_bytes_per_sample = int(round(lt.fsdp_carry_bytes_per_sample * lin))
        lt.ulysses_bytes_per_sample = int(round(lt.ulysses_bytes_per_sample * lin))
        lt.seq_len = max(1, int(round(lt.seq_len * lin)))
    e = out.embedding
    for table in (e.embed_fwd_ms_per_sample, e.embed_bwd_ms_per_sample, e.head_fwd_ms_per_sample,
                  e.head_bwd_ms_per_sample):
        for d in table:
            table[d] *= lin
    for table in (e.embed_act_bytes_per_sample, e.head_act_bytes_per_sample):
        for d in table:
            table[d] = int(round(table[d] * lin))
    e.carry_bytes_per_sample = int(round(e.carry_bytes_per_sample * lin))
    e.seq_len = seq
    out.seq_len = seq
    out.source = f"{mp.source} (fitted from seq {mp.seq_len} to {seq})"
    out.to_tables()
    return out

