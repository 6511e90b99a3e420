"""Compute time of a layer on a GPU from its operator shapes (the analytic model profile).

Each matrix multiplication of a layer is priced on its own (Megatron-style sharding over a
tensor-parallel degree ``t``: q/k/v, fc_in, gate/up and the LM head split their output
columns, o_proj, fc_out and down_proj their input rows):

- **tiles and waves**: cuBLAS/CUTLASS compute an ``M x N`` output in ``128 x 256`` tiles
  (either orientation; the better one is taken), one tile per SM at a time. A GEMM takes
  ``ceil(tiles / SMs)`` waves, each as long as a full tile's ``2 * 128 * 256 * K`` FLOPs at the
  per-SM share of the achievable peak (``peak * matmul_efficiency / SMs``, where
  ``matmul_efficiency`` is the measured maximum achievable matmul fraction of the device, see
  :mod:`galvatron.profiles.presets`). Partial tiles and partial last waves are the
  quantisation losses;
- **roofline**: no GEMM is faster than moving its operands and result once through device
  memory, ``(M*K + K*N + M*N) * bytes / HBM bandwidth``;
- backward of ``Y = X W`` is two GEMMs of the same FLOPs: ``dX = dY W^T`` (``M x K``, inner
  ``N``) and ``dW = X^T dY`` (``N x K``, inner ``M``).

Attention: with a fused (flash) kernel, ``4 * s * span * heads * head_dim`` FLOPs forward
(half of it when causal: the kernel skips masked blocks) and 2.5x that backward, at the
device's measured flash-attention fraction of peak (``attention_efficiency``). With the
explicit-softmax path (``attention="math"``, Megatron-LM before flash attention), ``Q K^T`` and
``A V`` are batched GEMMs (one per head) and the ``heads x s x s`` scores go through memory:
written by the GEMM, read and written by softmax (and by dropout, which also writes a 1-byte
mask), read by ``A V``.

Memory-bound operators (norms, activations, residual adds, rotary embeddings, dropout, the
loss) cost the bytes their kernels read and write at the HBM bandwidth: ``fused`` counts one
kernel per operator group as Megatron-LM's fused kernels (and torch.compile) run them,
``eager`` one kernel per PyTorch operator as our runtime (and torchtitan without compile) runs
them. Their backward moves twice the forward bytes (each reads its saved input and the output
gradient and writes the input gradient). The counts are listed in :func:`elementwise_elements`.

Everything here is per sample of ``seq`` tokens (``M = seq``); the cost model scales it with
the local batch. One tile shape only: a GEMM with fewer than 128 rows or columns is padded to a
whole tile (cuBLAS would pick a smaller tile), so skinny GEMMs are priced pessimistically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TILE = (128, 256)


@dataclass(frozen=True)
class Device:
    peak_flops: float  # FLOP/s, datasheet, for the compute dtype
    matmul_efficiency: float  # best-shaped GEMM achieved / peak
    num_sms: int
    memory_bandwidth: float  # bytes/s
    attention_efficiency: float  # flash attention fwd+bwd achieved / peak
    dtype_bytes: int = 2

    def gemm_ms(self, m: int, n: int, k: int, batch: int = 1) -> float:
        """Time of ``batch`` independent ``(m x k) @ (k x n)`` products."""
        if min(m, n, k, batch) <= 0:
            return 0.0
        per_sm = self.peak_flops * self.matmul_efficiency / self.num_sms
        best = math.inf
        for tm, tn in (TILE, TILE[::-1]):
            tiles = math.ceil(m / tm) * math.ceil(n / tn) * batch
            waves = math.ceil(tiles / self.num_sms)
            best = min(best, waves * 2.0 * tm * tn * k / per_sm)
        memory = (m * k + k * n + m * n) * batch * self.dtype_bytes / self.memory_bandwidth
        return max(best, memory) * 1e3

    def gemm_fwd_bwd_ms(self, m: int, n: int, k: int, batch: int = 1) -> tuple[float, float]:
        fwd = self.gemm_ms(m, n, k, batch)
        return fwd, self.gemm_ms(m, k, n, batch) + self.gemm_ms(n, k, m, batch)

    def memory_ms(self, elements: float) -> float:
        return elements * self.dtype_bytes / self.memory_bandwidth * 1e3


def layer_gemms(spec, t: int) -> list[tuple[int, int]]:  # noqa: ANN001 - a LayerTypeSpec
    """(N, K) of every weight GEMM of one token row, sharded over tp degree ``t``: column-
    parallel ones split N, row-parallel ones K. Decomposed from the spec's fields."""
    h, a, d = spec.hidden_size, spec.num_heads, spec.head_dim
    kv = spec.num_kv_heads or a
    out: list[tuple[int, int]] = []
    attn_weights = 0
    for _ in range(spec.attn_ops):
        out += [((a * d) // t, h), ((kv * d) // t, h), ((kv * d) // t, h), (h, (a * d) // t)]
        attn_weights += 2 * h * a * d + 2 * h * kv * d
    rest = spec.matmul_params - attn_weights
    f = spec.ffn_hidden
    if f and rest == 3 * h * f:  # gated MLP: gate, up, down
        out += [(f // t, h), (f // t, h), (h, f // t)]
    elif f and rest == 2 * h * f:  # fc_in, fc_out
        out += [(f // t, h), (h, f // t)]
    elif rest > 0 and spec.attn_ops == 0:  # the LM head (vocab-parallel) or a classifier
        out.append((max(1, rest // h) // t, h))
    elif rest > 0:
        out.append((max(1, rest // h), h // t))
    return out


def elementwise_elements(spec, t: int, seq_shards: int, fused: bool, dropout: bool) -> float:  # noqa: ANN001
    """Elements (of the compute dtype) that the memory-bound operators of one token read and
    write in the forward pass of a layer (see the module docstring)."""
    names = {s.name for s in spec.saved}
    h, a, d = spec.hidden_size, spec.num_heads, spec.head_dim
    kv, f = spec.num_kv_heads or a, spec.ffn_hidden
    rms = any(n.endswith(".rstd") for n in names)
    rope = "attn.rope_cos_sin" in names
    gated = "mlp.gate" in names
    if spec.attn_ops == 0:  # embedding (a lookup writing h) or head + loss
        vocab = spec.matmul_params // h if spec.matmul_params else 0
        if not vocab:
            return float(h)
        norm = 2 * h if fused else (18 * h if rms else 4 * h)
        # loss over the logits: fused: read logits once, write the gradient; eager: upcast to
        # fp32 (r2 w4 bytes), log-softmax (two reads, one write of fp32), as 2-byte elements
        loss = 2 * vocab / t if fused else 9 * vocab / t
        return norm / seq_shards + loss
    norm = 2 * h if fused else (18 * h if rms else 4 * h)  # eager RMSNorm: fp32 upcast, pow, mean, mul, cast, weight
    residual = 3 * h  # read two, write one
    drop = 0.5 * h if dropout else 0.0  # the 1-byte mask
    per_norm_side = (2 * (norm + residual + drop)) / seq_shards  # two norms, two residual adds: h-sized
    if gated:
        act = (3 * f if fused else 5 * f) / t  # silu(gate) * up
    else:
        act = 2 * f / t  # gelu (Megatron fuses the bias in)
    rot = (0 if not rope else (4 if fused else 10) * (a + kv) * d / t)
    layout = 0 if fused else 2 * a * d / t  # attention output transpose to [b, s, h]
    return per_norm_side + act + rot + layout


def attention_ms(dev: Device, spec, seq: int, t: int, math_path: bool, causal: bool,  # noqa: ANN001
                 dropout: bool) -> tuple[float, float]:
    """Forward and backward time of the attention products of one sample."""
    if spec.attn_ops == 0:
        return 0.0, 0.0
    s = spec.tokens(seq)
    span = s if spec.attn_span is None else spec.attn_span
    heads = max(1, spec.num_heads // t) * spec.attn_ops
    d = spec.head_dim
    if not math_path:
        flops = 4.0 * s * span * heads * d * (0.5 if causal and spec.attn_span is None else 1.0)
        rate = dev.peak_flops * (dev.attention_efficiency or dev.matmul_efficiency)
        return flops / rate * 1e3, 2.5 * flops / rate * 1e3
    qk_f, qk_b = dev.gemm_fwd_bwd_ms(s, span, d, heads)
    av_f, av_b = dev.gemm_fwd_bwd_ms(s, d, span, heads)
    scores = float(s) * span * heads
    # fwd: softmax reads + writes, dropout reads + writes + 1-byte mask (the GEMMs' own score
    # reads/writes are in their roofline)
    fwd_elems = scores * (2 + (2.5 if dropout else 0.0))
    return qk_f + av_f + dev.memory_ms(fwd_elems), qk_b + av_b + dev.memory_ms(2 * fwd_elems)


def layer_ms(dev: Device, spec, seq: int, t: int, *, fused: bool, math_path: bool, causal: bool,  # noqa: ANN001
             dropout: bool) -> tuple[float, float]:
    """Forward and backward time (ms) of one sample of ``seq`` tokens of a layer on one of
    ``t`` tensor-parallel shards."""
    m = spec.tokens(seq)
    fwd = bwd = 0.0
    for n, k in layer_gemms(spec, t):
        f, b = dev.gemm_fwd_bwd_ms(m, max(1, n), max(1, k))
        fwd, bwd = fwd + f, bwd + b
    af, ab = attention_ms(dev, spec, seq, t, math_path, causal, dropout)
    ew = dev.memory_ms(m * elementwise_elements(spec, t, 1, fused, dropout))
    return fwd + af + ew, bwd + ab + 2 * ew


SELECTIVE_MATMULS = ("keep", "every_other")


def recomputed_gemms(spec, t: int, matmuls: str = "keep") -> list[tuple[int, int]]:  # noqa: ANN001
    """(N, K) of the weight GEMMs a selective checkpointing policy recomputes in backward.

    ``"keep"`` (our runtime's selective mode) saves every matmul output: none. ``"every_other"``
    is torchtitan's op-level policy (``selective_ac_option = "op"``, the default of its Llama
    configs): it saves the outputs of the compute-intensive operators except every second
    ``aten.mm`` of a block's forward, counted in execution order from 1 -- the 2nd, 4th, ... of
    :func:`layer_gemms` (Llama: k, o and up projections; GPT: k, o and fc_out)."""
    if matmuls not in SELECTIVE_MATMULS:
        raise ValueError(f"selective_matmuls: {matmuls!r} is not accepted; accepted: "
                         + ", ".join(repr(x) for x in SELECTIVE_MATMULS))
    if matmuls == "keep":
        return []
    return layer_gemms(spec, t)[1::2]


def selective_recompute_ms(dev: Device, spec, seq: int, t: int, *, fused: bool, math_path: bool,  # noqa: ANN001
                           causal: bool, dropout: bool, matmuls: str = "keep") -> float:
    """Forward time (ms) of one sample that selective checkpointing recomputes in backward: what
    :func:`layer_ms` prices besides the GEMMs and the fused attention kernel, whose outputs it
    keeps -- the memory-bound operators, and the explicit-softmax attention on the math path --
    plus the forward of the GEMMs the policy does not keep (:func:`recomputed_gemms`)."""
    m = spec.tokens(seq)
    ew = dev.memory_ms(m * elementwise_elements(spec, t, 1, fused, dropout))
    af = attention_ms(dev, spec, seq, t, math_path, causal, dropout)[0] if math_path else 0.0
    gemms = sum(dev.gemm_ms(m, max(1, n), max(1, k)) for n, k in recomputed_gemms(spec, t, matmuls))
    return ew + af + gemms
