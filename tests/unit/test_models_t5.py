"""T5: same seq2seq logits/loss as transformers (relative bias, cross-attention, masks),
exact export, stream swap at the last encoder layer, shared bias tables."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import (
    ATOL,
    assert_roundtrip_exact,
    ids,
    max_logit_diff,
    right_padding_mask,
    tiny_hf_t5,
)

transformers = pytest.importorskip("transformers")




V11 = {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("kw", [{}, V11], ids=["t5-v1.0", "t5-v1.1-gated-unscaled"])
def test_t5_logits_match_transformers(kw, masked):
    hf = tiny_hf_t5(**kw)
    ours = M.from_hf(hf)
    inputs = {"input_ids": ids(seq=8), "decoder_input_ids": ids(seq=6, seed=1)}
    if masked:
        inputs.update(attention_mask=right_padding_mask(seq=8),
                      decoder_attention_mask=right_padding_mask(seq=6))
    assert max_logit_diff(hf, ours, **inputs) < ATOL


def test_t5_loss_with_labels_only_matches_transformers():
    """Without decoder_input_ids the labels are shifted right, as in transformers."""
    hf = tiny_hf_t5()
    ours = M.from_hf(hf)
    x, labels = ids(seq=8), ids(seq=6, seed=2)
    labels[0, 4:] = -100
    with torch.no_grad():
        ref = hf(input_ids=x, labels=labels).loss
        got = ours.loss(ours(input_ids=x, labels=labels), {"labels": labels})
    assert abs(ref.item() - got.item()) < ATOL


@pytest.mark.parametrize("kw", [{}, V11], ids=["t5-v1.0", "t5-v1.1"])
def test_t5_to_hf_roundtrip_is_exact(kw):
    assert_roundtrip_exact(tiny_hf_t5(**kw))


def test_t5_carry_swaps_streams_at_the_last_encoder_layer():
    model = M.build("t5-debug", seed=0).eval()
    assert model.layer_types() == ["t5_encoder", "t5_encoder_last", "t5_decoder", "t5_decoder"]
    carry = model.embed({"input_ids": ids(seq=8), "decoder_input_ids": ids(seq=5)})
    assert carry.hidden.shape == (2, 8, 64) and carry.memory.shape == (2, 5, 64)
    with torch.no_grad():
        carry = model.layers[1](model.layers[0](carry))
    assert carry.hidden.shape == (2, 5, 64) and carry.memory.shape == (2, 8, 64)


def test_t5_relative_bias_is_one_table_per_stack():
    model = M.build("t5-debug", seed=0)
    assert model.layers[0].attn.rel_bias is model.layers[1].attn.rel_bias
    assert model.layers[2].attn.rel_bias is not model.layers[0].attn.rel_bias
    assert model.layers[2].cross_attn.rel_bias is None
    assert ("layers.0.attn.rel_bias.weight", "layers.1.attn.rel_bias.weight") in model.tied_parameters()
