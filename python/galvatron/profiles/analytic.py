"""Analytic model profiles: the model spec (parameters, FLOPs, saved activations; see
:mod:`galvatron.models.spec`) combined with a hardware profile's compute peak.

Compute time per sample on a shard of degree ``d`` is ``flops / d / (peak * efficiency)``;
backward is twice the forward FLOPs (weight and input gradients), so ``bwd = 2 * fwd``.
Activation bytes come straight from the spec for every (sp kind, degree), with and without
selective checkpointing; selective's recomputation is the counted FLOPs it recomputes (the
attention products of non-fused attention; element-wise work is not counted, so on fused
attention it is free in this profile -- a measured profile times it).
"""

from __future__ import annotations

from galvatron.profiles.hardware import HardwareProfile, powers_of_two
from galvatron.profiles.model import EmbeddingProfile, LayerTypeProfile, ModelProfile


def model_profile(model: str, seq_len: int | None = None, hardware: HardwareProfile | None = None,
                  precision: str = "bf16", max_degree: int | None = None, **overrides) -> ModelProfile:
    """Analytic :class:`ModelProfile` of a model from ``galvatron.models.list()``.

    ``hardware`` gives the compute peak (default: the ``a100-80g-sxm`` preset); tables cover
    shard degrees 1, 2, 4, ... up to ``max_degree`` (default: the hardware's world size).
    """
    from galvatron import models
    from galvatron.profiles.presets import hardware_preset

    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision: {precision!r} is not accepted; accepted: 'bf16', 'fp16', 'fp32'")
    hw = hardware or hardware_preset("a100-80g-sxm")
    cfg = models.get_config(model, **overrides)
    if seq_len is not None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        if hasattr(cfg, "max_seq_len") and seq_len > cfg.max_seq_len:
            cfg = cfg.replace(max_seq_len=seq_len)
    spec = models.spec(cfg)
    seq = seq_len or spec.seq_len
    cb = 4 if precision == "fp32" else 2
    peak = hw.peak_tflops.get(precision, hw.peak_tflops.get("fp32", 1.0)) * 1e12 * hw.matmul_efficiency
    ms_per_flop = 1e3 / peak
    degrees = powers_of_two(max_degree or hw.world_size)
    names = list(spec.layer_specs)
    layer_types = []
    for name in names:
        ls = spec.layer_specs[name]
        fwd = ls.flops_fwd(1, seq) * ms_per_flop
        tokens = ls.tokens(seq)
        head_dim = ls.head_dim or (ls.hidden_size // max(ls.num_heads, 1))
        acts = {kind: {d: ls.act_bytes(1, seq, cb, tp=(1 if kind == "ulysses" else d),
                                       sp=(d if kind == "ulysses" else 1), sp_kind=kind)
                       for d in degrees if not (kind == "megatron" and d == 1)}
                for kind in ("none", "megatron", "ulysses")}
        acts["megatron"].setdefault(1, acts["none"][1])  # unused placeholder for a complete table
        acts["ulysses"].setdefault(1, acts["none"][1])
        selective = {kind: {d: ls.act_bytes(1, seq, cb, tp=(1 if kind == "ulysses" else d),
                                            sp=(d if kind == "ulysses" else 1), sp_kind=kind,
                                            checkpoint="selective")
                            for d in degrees if not (kind == "megatron" and d == 1)}
                     for kind in ("none", "megatron", "ulysses")}
        selective["megatron"].setdefault(1, selective["none"][1])
        selective["ulysses"].setdefault(1, selective["none"][1])
        recompute = ls.selective_recompute_flops(1, seq) * ms_per_flop
        layer_types.append(LayerTypeProfile(
            name=name, param_count=ls.param_count,
            carry_bytes_per_sample=max(1, ls.input_per_token) * tokens * cb, seq_len=tokens,
            num_heads=max(ls.num_heads, 1), num_kv_heads=max(ls.num_kv_heads or ls.num_heads, 1),
            tp_collectives=max(1, ls.attn_ops) + (1 if ls.ffn_hidden else 0),
            ulysses_bytes_per_sample=tokens * (2 * ls.num_heads + 2 * (ls.num_kv_heads or ls.num_heads)) * head_dim * cb,
            fwd_ms_per_sample={d: fwd / d for d in degrees}, bwd_ms_per_sample={d: 2 * fwd / d for d in degrees},
            act_bytes_per_sample=acts, selective_act_bytes_per_sample=selective,
            selective_recompute_ms_per_sample={d: recompute / d for d in degrees},
            sequence_parallel=getattr(cfg, "family", "") != "swin",  # windows need the whole sequence
        ))
    first = spec.layer(0)
    # Only the embedding/head weight tie matters here (the spec's tied count may also include
    # tables shared between layers, e.g. T5's relative-position biases).
    tied = 0
    if getattr(cfg, "tie_word_embeddings", False) and getattr(cfg, "vocab_size", None):
        tied = min(cfg.vocab_size * cfg.hidden_size, spec.embed.param_count, spec.head.param_count)
    emb_fwd = spec.embed.flops_fwd(1, seq) * ms_per_flop
    head_fwd = spec.head.flops_fwd(1, seq) * ms_per_flop
    embedding = EmbeddingProfile(
        embed_param_count=spec.embed.param_count - tied,
        head_param_count=spec.head.param_count - tied,
        tied_param_count=tied,
        carry_bytes_per_sample=max(1, first.input_per_token) * first.tokens(seq) * cb, seq_len=seq,
        embed_fwd_ms_per_sample={d: emb_fwd / d for d in degrees},
        embed_bwd_ms_per_sample={d: 2 * emb_fwd / d for d in degrees},
        head_fwd_ms_per_sample={d: head_fwd / d for d in degrees},
        head_bwd_ms_per_sample={d: 2 * head_fwd / d for d in degrees},
        embed_act_bytes_per_sample={d: spec.embed.act_bytes(1, seq, cb, tp=d) for d in degrees},
        head_act_bytes_per_sample={d: spec.head.act_bytes(1, seq, cb, tp=d) for d in degrees},
    )
    return ModelProfile(model=model, seq_len=seq, layer_types=layer_types,
                        layer_type_of=[names.index(t) for t in spec.layer_types], embedding=embedding,
                        precision=precision, model_config={"name": model, **overrides}, source="analytic")
