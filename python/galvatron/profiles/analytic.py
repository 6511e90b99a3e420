"""Analytic model profiles: the model spec (parameters, FLOPs, saved activations; see
:mod:`galvatron.models.spec`) combined with a hardware profile's compute peak.

Compute time per sample on a shard of degree ``d``: on a GPU preset (``num_sms > 0``) every
GEMM, the attention kernel and the memory-bound operators are priced from their shapes by
:mod:`galvatron.profiles.gpu_compute` (tile and wave quantisation on the SMs, roofline at the
HBM bandwidth); otherwise ``flops / d / (peak * efficiency)`` with ``bwd = 2 * fwd``.
Activation bytes come straight from the spec for every (sp kind, degree), with and without
selective checkpointing. Selective's recomputation: on a GPU preset, the forward's
memory-bound operators (and the explicit-softmax attention on the math path); otherwise the
counted FLOPs it recomputes (the attention products of non-fused attention; element-wise work
is not counted, so on fused attention it is free there). Tables cover every divisor of the
world size up to ``max_degree`` (not only powers of two).
"""

from __future__ import annotations

from typing import Any

from galvatron.profiles.hardware import HardwareProfile
from galvatron.profiles.model import EmbeddingProfile, LayerTypeProfile, ModelProfile


def model_profile(model: str, seq_len: int | None = None, hardware: HardwareProfile | None = None,
                  precision: str = "bf16", max_degree: int | None = None, kernels: str = "eager",
                  attention: str = "flash", selective_matmuls: str = "keep", **overrides) -> ModelProfile:
    """Analytic :class:`ModelProfile` of a model from ``galvatron.models.list()``.

    ``hardware`` gives the compute peak (default: the ``a100-80g-sxm`` preset); tables cover
    every shard degree dividing the hardware's world size up to ``max_degree`` (default: the
    world size). On GPU presets, ``kernels`` says how memory-bound operators run ("eager": one
    kernel per PyTorch operator, as our runtime; "fused": Megatron-LM's fused kernels or
    torch.compile) and ``attention`` which attention kernel ("flash": a fused kernel, as
    ``scaled_dot_product_attention``; "math": explicit softmax, Megatron-LM before flash
    attention); see :mod:`galvatron.profiles.gpu_compute`. ``selective_matmuls`` says which
    matmul outputs a selectively checkpointed layer keeps: "keep" (every one, our runtime's
    selective mode) or "every_other" (torchtitan's op-level policy, which recomputes every second
    matmul of a block; time only -- the kept-activation tables stay those of "keep", an upper
    bound); see :func:`galvatron.profiles.gpu_compute.recomputed_gemms`.
    """
    from galvatron import models
    from galvatron.profiles.gpu_compute import SELECTIVE_MATMULS, recomputed_gemms
    from galvatron.profiles.presets import hardware_preset

    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision: {precision!r} is not accepted; accepted: 'bf16', 'fp16', 'fp32'")
    if kernels not in ("eager", "fused"):
        raise ValueError(f"kernels: {kernels!r} is not accepted; accepted: 'eager', 'fused'")
    if attention not in ("flash", "math"):
        raise ValueError(f"attention: {attention!r} is not accepted; accepted: 'flash', 'math'")
    if selective_matmuls not in SELECTIVE_MATMULS:
        raise ValueError(f"selective_matmuls: {selective_matmuls!r} is not accepted; accepted: "
                         + ", ".join(repr(x) for x in SELECTIVE_MATMULS))
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
    # mixed precision: fp32 master weights under autocast; the residual stream (what a layer
    # takes, keeps when checkpointed, and sends between layers and stages) stays float32
    amp = precision != "fp32"
    stream = 4
    peak_flops = hw.peak_tflops.get(precision, hw.peak_tflops.get("fp32", 1.0)) * 1e12
    ms_per_flop = 1e3 / (peak_flops * hw.matmul_efficiency)
    top = max_degree or hw.world_size
    degrees = [d for d in range(1, top + 1) if hw.world_size % d == 0] or [1]
    dev = None
    if hw.num_sms > 0 and hw.memory_bandwidth_gbps > 0:
        from galvatron.profiles.gpu_compute import Device

        dev = Device(peak_flops, hw.matmul_efficiency, hw.num_sms, hw.memory_bandwidth_gbps * 1e9,
                     hw.attention_efficiency, dtype_bytes=cb)
    shape_opts = dict(fused=kernels == "fused", math_path=attention == "math",
                      causal=getattr(cfg, "family", "") in ("gpt2", "llama"),
                      dropout=float(getattr(cfg, "dropout", 0.0) or 0.0) > 0)

    def times(ls, flops_fwd: float, degs: list[int]) -> tuple[dict[int, float], dict[int, float]]:  # noqa: ANN001
        """Forward and backward ms per sample at every degree of ``degs``."""
        if dev is None:
            fwd = flops_fwd * ms_per_flop
            return {d: fwd / d for d in degs}, {d: 2 * fwd / d for d in degs}
        from galvatron.profiles.gpu_compute import layer_ms

        pairs = {d: layer_ms(dev, ls, seq, d, **shape_opts) for d in degs}
        return {d: p[0] for d, p in pairs.items()}, {d: p[1] for d, p in pairs.items()}

    def recompute_times(ls, degs: list[int]) -> dict[int, float]:  # noqa: ANN001
        """What selective checkpointing recomputes, ms per sample at every degree of ``degs``."""
        if dev is None:
            gemm_flops = 2 * ls.tokens(seq) * sum(n * k for n, k in recomputed_gemms(ls, 1, selective_matmuls))
            recompute = (ls.selective_recompute_flops(1, seq) + gemm_flops) * ms_per_flop
            return {d: recompute / d for d in degs}
        from galvatron.profiles.gpu_compute import selective_recompute_ms

        return {d: selective_recompute_ms(dev, ls, seq, d, matmuls=selective_matmuls, **shape_opts)
                for d in degs}

    names = list(spec.layer_specs)
    layer_types = []
    for name in names:
        ls = spec.layer_specs[name]
        fwd_t, bwd_t = times(ls, ls.flops_fwd(1, seq), degrees)
        tokens = ls.tokens(seq)
        head_dim = ls.head_dim or (ls.hidden_size // max(ls.num_heads, 1))
        acts = {kind: {d: ls.act_bytes(1, seq, cb, tp=(1 if kind == "ulysses" else d),
                                       sp=(d if kind == "ulysses" else 1), sp_kind=kind, autocast=amp)
                       for d in degrees if not (kind == "megatron" and d == 1)}
                for kind in ("none", "megatron", "ulysses")}
        acts["megatron"].setdefault(1, acts["none"][1])  # unused placeholder for a complete table
        acts["ulysses"].setdefault(1, acts["none"][1])
        selective = {kind: {d: ls.act_bytes(1, seq, cb, tp=(1 if kind == "ulysses" else d),
                                            sp=(d if kind == "ulysses" else 1), sp_kind=kind,
                                            checkpoint="selective", autocast=amp)
                            for d in degrees if not (kind == "megatron" and d == 1)}
                     for kind in ("none", "megatron", "ulysses")}
        selective["megatron"].setdefault(1, selective["none"][1])
        selective["ulysses"].setdefault(1, selective["none"][1])
        recompute_t = recompute_times(ls, degrees)
        fsdp: dict[str, Any] = {}
        if amp:  # ZeRO-2/3 units: FSDP2 casts the input, the whole layer runs in the compute dtype
            fsdp = dict(
                fsdp_act_bytes_per_sample={kind: {d: ls.act_bytes(1, seq, cb, tp=(1 if kind == "ulysses" else d),
                                                                 sp=(d if kind == "ulysses" else 1), sp_kind=kind)
                                                  for d in t} for kind, t in acts.items()},
                fsdp_selective_act_bytes_per_sample={
                    kind: {d: ls.act_bytes(1, seq, cb, tp=(1 if kind == "ulysses" else d),
                                           sp=(d if kind == "ulysses" else 1), sp_kind=kind, checkpoint="selective")
                           for d in t} for kind, t in selective.items()},
                fsdp_carry_bytes_per_sample=max(1, ls.input_per_token) * tokens * cb)
        layer_types.append(LayerTypeProfile(
            name=name, param_count=ls.param_count,
            carry_bytes_per_sample=max(1, ls.input_per_token) * tokens * stream, seq_len=tokens,
            num_heads=max(ls.num_heads, 1), num_kv_heads=max(ls.num_kv_heads or ls.num_heads, 1),
            tp_collectives=max(1, ls.attn_ops) + (1 if ls.ffn_hidden else 0),
            ulysses_bytes_per_sample=tokens * (2 * ls.num_heads + 2 * (ls.num_kv_heads or ls.num_heads)) * head_dim * cb,
            fwd_ms_per_sample=fwd_t, bwd_ms_per_sample=bwd_t,
            act_bytes_per_sample=acts, selective_act_bytes_per_sample=selective,
            selective_recompute_ms_per_sample=recompute_t,
            allow_sequence_parallel=getattr(cfg, "family", "") != "swin",  # windows need the whole sequence
            **fsdp,
        ))
    first = spec.layer(0)
    # Only the embedding/head weight tie matters here (the spec's tied count may also include
    # tables shared between layers, e.g. T5's relative-position biases).
    tied = 0
    if getattr(cfg, "tie_word_embeddings", False) and getattr(cfg, "vocab_size", None):
        tied = min(cfg.vocab_size * cfg.hidden_size, spec.embed.param_count, spec.head.param_count)
    # The runtime splits the embedding/head only through a vocabulary (vocab-parallel tables):
    # without one (ViT, Swin) they stay data parallel, so the tables list degree 1 only and the
    # search offers nothing else there.
    emb_degrees = degrees if getattr(cfg, "vocab_size", None) else [1]
    emb_fwd, emb_bwd = times(spec.embed, spec.embed.flops_fwd(1, seq), emb_degrees)
    head_fwd, head_bwd = times(spec.head, spec.head.flops_fwd(1, seq), emb_degrees)
    embedding = EmbeddingProfile(
        embed_param_count=spec.embed.param_count - tied,
        head_param_count=spec.head.param_count - tied,
        tied_param_count=tied,
        carry_bytes_per_sample=max(1, first.input_per_token) * first.tokens(seq) * stream, seq_len=seq,
        embed_fwd_ms_per_sample=emb_fwd, embed_bwd_ms_per_sample=emb_bwd,
        head_fwd_ms_per_sample=head_fwd, head_bwd_ms_per_sample=head_bwd,
        embed_act_bytes_per_sample={d: spec.embed.act_bytes(1, seq, cb, tp=d, autocast=amp) for d in emb_degrees},
        head_act_bytes_per_sample={d: spec.head.act_bytes(1, seq, cb, tp=d, autocast=amp) for d in emb_degrees},
        head_transient_bytes_per_sample={d: _loss_transient_bytes(spec.head, seq, d, kernels) for d in emb_degrees},
    )
    return ModelProfile(model=model, seq_len=seq, layer_types=layer_types,
                        layer_type_of=[names.index(t) for t in spec.layer_types], embedding=embedding,
                        precision=precision, model_config={"name": model, **overrides}, source="analytic")


def _loss_transient_bytes(head, seq: int, tp: int, kernels: str) -> int:  # noqa: ANN001 - a LayerTypeSpec
    """Working memory of a language-model loss beyond the fp32 log-softmax it keeps: eager
    ``cross_entropy(logits.float())`` holds the fp32 logits in forward, and in backward the
    fp32 gradient of the log-probabilities and of the logits at once (8 bytes per logit); a
    fused loss kernel works in place on one fp32 copy (4 bytes). Vocabulary split over tp."""
    vocab = head.matmul_params // head.hidden_size if head.hidden_size else 0
    if not any(t.name == "loss.log_softmax" and t.per_token for t in head.saved) or vocab == 0:
        return 0
    per_logit = 8 if kernels == "eager" else 4
    return per_logit * head.tokens(seq) * -(-vocab // tp)
