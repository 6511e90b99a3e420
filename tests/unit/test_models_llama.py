"""LLaMA / Mistral: same logits as transformers (GQA, RoPE, sliding window), exact export."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import (
    ATOL,
    LLAMA_TINY,
    assert_roundtrip_exact,
    ids,
    max_logit_diff,
    right_padding_mask,
    tiny_hf_llama,
)

transformers = pytest.importorskip("transformers")





@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize(
    "kind,kw",
    [("llama", {}), ("llama", {"num_key_value_heads": 4, "rope_theta": 500000.0}),
     ("llama", {"tie_word_embeddings": True}), ("mistral", {})],
    ids=["gqa", "mha-llama3-theta", "tied", "mistral-sliding-window"],
)
def test_llama_logits_match_transformers(kind, kw, masked):
    hf = tiny_hf_llama(kind, **kw)
    ours = M.from_hf(hf)
    inputs = {"input_ids": ids()}
    if masked:
        inputs["attention_mask"] = right_padding_mask()
    assert max_logit_diff(hf, ours, **inputs) < ATOL


@pytest.mark.parametrize("kind", ["llama", "mistral"])
def test_llama_to_hf_roundtrip_is_exact(kind):
    assert_roundtrip_exact(tiny_hf_llama(kind))


def test_llama_rope_scaling_is_rejected_by_name():
    hf_cfg = transformers.LlamaConfig(**LLAMA_TINY)
    hf_cfg.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="rope_type"):
        M.FAMILIES["llama"].hf.config_from_hf(hf_cfg)


def test_llama_math_backend_equals_sdpa_with_gqa_and_window():
    # window 4 with 3 padded tokens: no query row is fully masked (those rows are undefined
    # and differ between backends)
    kw = dict(seed=3, sliding_window=4)
    model, math = M.build("llama-debug", **kw).eval(), M.build("llama-debug", attn_backend="math", **kw).eval()
    x, mask = ids(), right_padding_mask()
    with torch.no_grad():
        assert (model(input_ids=x, attention_mask=mask) - math(input_ids=x, attention_mask=mask)).abs().max() < ATOL


def test_llama_layer_runs_with_fewer_heads_like_a_tp_shard():
    """Layers reshape with the local head count: a half-width shard of q/k/v/o runs unchanged."""
    model = M.build("llama-debug", seed=0).eval()
    layer = model.layers[0]
    attn = layer.attn
    half_q, half_kv = attn.q_proj.out_features // 2, attn.k_proj.out_features // 2
    with torch.no_grad():
        shard = torch.nn.Linear(64, half_q, bias=False)
        shard.weight.copy_(attn.q_proj.weight[:half_q])
        attn.q_proj = shard
        for name in ("k_proj", "v_proj"):
            lin = torch.nn.Linear(64, half_kv, bias=False)
            lin.weight.copy_(getattr(attn, name).weight[:half_kv])
            setattr(attn, name, lin)
        o = torch.nn.Linear(half_q, 64, bias=False)
        o.weight.copy_(attn.o_proj.weight[:, :half_q])
        attn.o_proj = o
        out = layer(M.Carry(torch.randn(2, 8, 64)))
    assert out.hidden.shape == (2, 8, 64)
