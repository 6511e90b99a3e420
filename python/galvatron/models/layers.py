"""Building blocks shared by the model families: attention, MLPs, norms, masks, RoPE, the
pre-norm block, the LM head and the patch embedding.

Layouts used everywhere in this package:

- hidden states: ``[batch, seq, hidden]``;
- attention inputs/outputs of ``core``: ``[batch, seq, heads, head_dim]`` (the local head
  count is read from the tensors, so tensor-parallel shards with fewer heads run unchanged);
- padding masks: ``[batch, seq]``, nonzero = attend (Hugging Face ``attention_mask``).

Attention backends (:class:`AttnBackend`): ``SDPA`` calls
``torch.nn.functional.scaled_dot_product_attention`` (on CPU in fp32 this is the
flash-for-CPU kernel, which saves q, k, v, the output and the log-sum-exp for backward); ``AUTO``
is SDPA except on CUDA with fp16/bf16, no mask and no bias, where ``flash_attn`` is used when it
is installed; ``MATH`` is explicit ``softmax(q k^T * scale + mask) v``, for tests.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galvatron.models.rope import RopeScaling, rope_cos_sin

if TYPE_CHECKING:  # base.py imports this module; the carry is only an annotation here
    from galvatron.models.base import Carry

try:  # optional extra, never required
    from flash_attn import flash_attn_func  # type: ignore[import-not-found]
except Exception:  # noqa: BLE001 - any import failure means "not available"
    flash_attn_func = None


class AttnBackend(str, enum.Enum):
    """How ``core`` computes attention."""

    AUTO = "auto"  # flash-attn on CUDA when installed and applicable, else SDPA
    SDPA = "sdpa"  # torch scaled_dot_product_attention
    MATH = "math"  # explicit softmax(QK^T)V, for testing


class Activation(str, enum.Enum):
    GELU = "gelu"  # exact erf GELU (BERT, ViT, Swin)
    GELU_TANH = "gelu_tanh"  # tanh approximation (GPT-2 "gelu_new")
    RELU = "relu"  # T5 v1.0
    SILU = "silu"  # SwiGLU gate (LLaMA)
    TANH = "tanh"
    QUICK_GELU = "quick_gelu"  # x * sigmoid(1.702 x) (Hendrycks & Gimpel 2016)


def activation_fn(act: Activation, x: Tensor) -> Tensor:
    if act is Activation.GELU:
        return F.gelu(x)
    if act is Activation.GELU_TANH:
        return F.gelu(x, approximate="tanh")
    if act is Activation.RELU:
        return F.relu(x)
    if act is Activation.TANH:
        return torch.tanh(x)
    if act is Activation.QUICK_GELU:
        return x * torch.sigmoid(1.702 * x)
    return F.silu(x)


# ---------------------------------------------------------------------------- masks


def build_attn_mask(
    padding_mask: Tensor | None,
    q_len: int,
    k_len: int,
    causal: bool,
    sliding_window: int | None = None,
    device: torch.device | None = None,
) -> Tensor | None:
    """Boolean mask (True = attend) broadcastable to ``[batch, heads, q_len, k_len]``.

    Returns None when plain causal (``is_causal``) or no masking is enough; the caller then
    passes ``is_causal=causal`` to SDPA. A padding-only mask is ``[batch, 1, 1, k_len]``
    (small); causal + padding or a sliding window needs ``[batch|1, 1, q_len, k_len]``.
    """
    if padding_mask is None and sliding_window is None:
        return None
    mask = None
    if causal or sliding_window is not None:
        i = torch.arange(q_len, device=device)[:, None]
        j = torch.arange(k_len, device=device)[None, :]
        mask = j <= i if causal else torch.ones(q_len, k_len, dtype=torch.bool, device=device)
        if sliding_window is not None:
            mask = mask & (i - j < sliding_window)
        mask = mask[None, None]
    if padding_mask is not None:
        pad = padding_mask.to(device=device).bool()[:, None, None, :]
        mask = pad if mask is None else mask & pad
    return mask


def needs_is_causal(padding_mask: Tensor | None, causal: bool, sliding_window: int | None) -> bool:
    return causal and padding_mask is None and sliding_window is None


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Bool keep-mask -> float additive mask (0 / dtype min)."""
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min
    )


# ---------------------------------------------------------------------------- attention math


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    backend: AttnBackend = AttnBackend.AUTO,
    scale: float | None = None,
) -> Tensor:
    """Scaled dot-product attention in ``[batch, seq, heads, head_dim]`` layout.

    ``k``/``v`` may have fewer heads than ``q`` (grouped-query attention: query head ``i``
    uses kv head ``i // (hq // hkv)``). ``mask`` is a bool keep-mask or a float additive
    bias broadcastable to ``[batch, hq, q_len, k_len]``. Returns ``[batch, q_len, hq, head_dim]``.
    """
    gqa = k.shape[2] != q.shape[2]
    if (
        backend is AttnBackend.AUTO
        and flash_attn_func is not None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and mask is None
    ):
        return flash_attn_func(q, k, v, causal=is_causal, softmax_scale=scale)
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if backend is AttnBackend.MATH:
        if gqa:
            rep = q.shape[2] // k.shape[2]
            kt, vt = kt.repeat_interleave(rep, dim=1), vt.repeat_interleave(rep, dim=1)
        s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = (qt @ kt.transpose(-2, -1)) * s
        if is_causal:
            mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            scores = scores + (additive_mask(mask, scores.dtype) if mask.dtype == torch.bool else mask)
        out = torch.softmax(scores, dim=-1) @ vt
    else:
        out = F.scaled_dot_product_attention(
            qt, kt, vt, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa
        )
    return out.transpose(1, 2)


# ---------------------------------------------------------------------------- RoPE


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[batch, seq, heads, head_dim]`` (rotate-half convention, as HF LLaMA)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


# ---------------------------------------------------------------------------- modules


class Attention(nn.Module):
    """Multi-head / grouped-query attention with separate q/k/v/o projections.

    ``forward(x, padding_mask=None, memory=None)``: self-attention on ``x``, or cross-attention
    to ``memory`` when given; ``padding_mask`` ``[batch, k_len]`` hides padded keys (those of
    ``x``, or of ``memory`` in cross-attention). ``core(q, k, v, mask)`` is the attention math
    alone (RoPE applied inside it) so a runtime can wrap it, e.g. with Ulysses all-to-alls.
    ``bias``: biases on q/k/v and o (``out_bias``, when given, decides o's alone).
    ``rope_scaling`` (:mod:`galvatron.models.rope`) depends on the full sequence length, which
    ``core`` always sees.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        causal: bool = False,
        backend: AttnBackend = AttnBackend.AUTO,
        rope_theta: float | None = None,
        sliding_window: int | None = None,
        scale: float | None = None,
        kv_hidden: int | None = None,
        rope_scaling: RopeScaling | None = None,
        out_bias: bool | None = None,
    ) -> None:
        super().__init__()
        num_kv_heads = num_kv_heads or num_heads
        self.head_dim = head_dim or hidden // num_heads
        kv_in = kv_hidden or hidden
        self.q_proj = nn.Linear(hidden, num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_in, num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_in, num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * self.head_dim, hidden,
                                bias=bias if out_bias is None else out_bias)
        self.causal = causal
        self.backend = backend
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.sliding_window = sliding_window
        self.scale = scale

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        memory: Tensor | None = None,
    ) -> Tensor:
        b, s, _ = x.shape
        kv = x if memory is None else memory
        q = self.q_proj(x).view(b, s, -1, self.head_dim)
        k = self.k_proj(kv).view(b, kv.shape[1], -1, self.head_dim)
        v = self.v_proj(kv).view(b, kv.shape[1], -1, self.head_dim)
        out = self.core(q, k, v, padding_mask)
        return self.o_proj(out.reshape(b, s, -1))

    def core(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Attention on ``[batch, seq, heads, head_dim]``; ``mask`` is the ``[batch, k_len]``
        padding mask of the keys (full sequence, never sharded) or None."""
        if self.rope_theta is not None:
            cos, sin = rope_cos_sin(q.shape[1], q.shape[-1], self.rope_theta, q.device, q.dtype,
                                    self.rope_scaling)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        is_causal = needs_is_causal(mask, self.causal, self.sliding_window)
        attn_mask = build_attn_mask(
            mask, q.shape[1], k.shape[1], self.causal, self.sliding_window, q.device
        )
        return attention(q, k, v, attn_mask, is_causal, self.backend, self.scale)


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 and cast back before
    the weight multiply, exactly as Hugging Face LLaMA/T5 (so bf16 results match them too).
    Saves the float32 input, the float32 rstd and the normalised tensor in the input dtype."""

    def __init__(self, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class MLP(nn.Module):
    """``fc_out(act(fc_in(x)))``."""

    def __init__(self, hidden: int, ffn_hidden: int, act: Activation, bias: bool = True) -> None:
        super().__init__()
        self.fc_in = nn.Linear(hidden, ffn_hidden, bias=bias)
        self.fc_out = nn.Linear(ffn_hidden, hidden, bias=bias)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(activation_fn(self.act, self.fc_in(x)))


class GatedMLP(nn.Module):
    """SwiGLU / GeGLU: ``down_proj(act(gate_proj(x)) * up_proj(x))`` (Shazeer 2020)."""

    def __init__(self, hidden: int, ffn_hidden: int, act: Activation, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, ffn_hidden, bias=bias)
        self.up_proj = nn.Linear(hidden, ffn_hidden, bias=bias)
        self.down_proj = nn.Linear(ffn_hidden, hidden, bias=bias)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(activation_fn(self.act, self.gate_proj(x)) * self.up_proj(x))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    return F.dropout(x, p, training) if p > 0 and training else x


class PreNormBlock(nn.Module):
    """``x + attn(norm1(x))`` then ``+ mlp(norm2(x))`` (GPT-2, LLaMA, ViT); ``Carry -> Carry``."""

    def __init__(self, layer_type: str, norm1: nn.Module, attn: nn.Module, norm2: nn.Module,
                 mlp: nn.Module, dropout: float = 0.0) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.norm1, self.attn, self.norm2, self.mlp = norm1, attn, norm2, mlp
        self.dropout = dropout

    def forward(self, carry: Carry) -> Carry:
        x = carry.hidden
        a = self.attn(self.norm1(x), carry.mask)
        x = x + dropout(a, self.dropout, self.training)
        m = self.mlp(self.norm2(x))
        x = x + dropout(m, self.dropout, self.training)
        return dataclasses.replace(carry, hidden=x)


class LMHead(nn.Module):
    """Final norm + vocabulary projection (GPT-2, LLaMA): ``Carry -> logits``."""

    def __init__(self, norm: nn.Module, hidden: int, vocab: int) -> None:
        super().__init__()
        self.norm = norm
        self.lm_head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, carry: Carry) -> Tensor:
        return self.lm_head(self.norm(carry.hidden))


def patchify(conv: nn.Conv2d, pixels: Tensor, image_size: int) -> Tensor:
    """``[b, c, H, W]`` images (the configured size only) -> ``[b, patches, hidden]`` (ViT,
    Swin)."""
    if tuple(pixels.shape[-2:]) != (image_size, image_size):
        raise ValueError(f"pixel_values: images must be {image_size}x{image_size}, "
                         f"got {tuple(pixels.shape[-2:])}")
    return conv(pixels.to(conv.weight.dtype)).flatten(2).transpose(1, 2)
