"""``attn.core`` is the unit a runtime wraps for Ulysses sequence parallelism: it must work on
any subset of heads (given the right ``head_start``) with the full sequence, and apply RoPE /
relative position bias inside. Splitting the heads in two and running ``core`` on each half
must give the full result."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M


def _core_inputs(attn, b: int, s: int, kv_heads: int, heads: int, d: int):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, s, heads, d, generator=g)
    k = torch.randn(b, s, kv_heads, d, generator=g)
    v = torch.randn(b, s, kv_heads, d, generator=g)
    return q, k, v


@pytest.mark.parametrize("name,layer_index,attr", [
    ("llama-debug", 0, "attn"),  # RoPE, GQA (4 q heads, 2 kv heads)
    ("gpt2-debug", 0, "attn"),
    ("t5-debug", 0, "attn"),  # bidirectional relative bias
    ("t5-debug", 2, "attn"),  # causal relative bias
    ("swin-debug", 1, "attn"),  # window bias + shifted-window mask
])
def test_core_on_half_the_heads_equals_the_full_core(name, layer_index, attr):
    model = M.build(name, seed=0).eval()
    attn = getattr(model.layers[layer_index], attr)
    with torch.no_grad():
        for p in attn.parameters():  # make every bias table non-trivial
            p.normal_()
    heads = attn.q_proj.out_features // attn.head_dim
    kv_heads = attn.k_proj.out_features // attn.head_dim
    batch, seq = (2 * 16, 16) if name == "swin-debug" else (2, 8)  # swin: b * windows, N
    q, k, v = _core_inputs(attn, batch, seq, kv_heads, heads, attn.head_dim)
    mask = None
    with torch.no_grad():
        full = attn.core(q, k, v, mask)
        parts = []
        for half in range(2):
            qs = slice(half * heads // 2, (half + 1) * heads // 2)
            ks = slice(half * kv_heads // 2, (half + 1) * kv_heads // 2)
            if hasattr(attn, "head_start"):
                attn.head_start = qs.start
            parts.append(attn.core(q[:, :, qs], k[:, :, ks], v[:, :, ks], mask))
        if hasattr(attn, "head_start"):
            attn.head_start = 0
    torch.testing.assert_close(torch.cat(parts, dim=2), full, rtol=0, atol=1e-6)
