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


@pytest.mark.parametrize("enc, dec", [(3, 1), (1, 3)], ids=["deeper-encoder", "deeper-decoder"])
def test_t5_with_unequal_encoder_and_decoder_depths_matches_transformers(enc, dec):
    hf = tiny_hf_t5(num_layers=enc, num_decoder_layers=dec)
    ours = M.from_hf(hf)
    assert ours.config.num_layers == enc and ours.config.decoder_layers == dec
    assert ours.layer_types() == (["t5_encoder"] * (enc - 1) + ["t5_encoder_last"] + ["t5_decoder"] * dec)
    inputs = {"input_ids": ids(seq=8), "decoder_input_ids": ids(seq=6, seed=1),
              "attention_mask": right_padding_mask(seq=8)}
    assert max_logit_diff(hf, ours, **inputs) < ATOL
    assert_roundtrip_exact(hf)
    # the decoder's bias table is shared by all its layers, wherever the decoder starts
    assert all(ours.layers[enc + i].attn.rel_bias is ours.layers[enc].attn.rel_bias for i in range(dec))


def test_t5_unequal_depths_spec_counts_each_stack():
    cfg = M.get_config("t5-debug", num_layers=3, num_decoder_layers=1)
    spec = M.spec(cfg)
    assert spec.layer_types == ("t5_encoder", "t5_encoder", "t5_encoder_last", "t5_decoder")
    model = M.build(cfg, seed=0)
    assert spec.param_count() == model.num_params() == sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="num_decoder_layers must be an integer >= 1 or None"):
        M.get_config("t5-debug", num_decoder_layers=0)


def test_t5_unequal_depths_cost_model_has_each_layer_type_per_layer():
    import galvatron

    hw = galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=2)
    mp = galvatron.model_profile("t5-debug", hardware=hw, num_layers=1, num_decoder_layers=3)
    assert [mp.layer_types[i].name for i in mp.layer_type_of] == ["t5_encoder_last"] + ["t5_decoder"] * 3
    deeper = galvatron.model_profile("t5-debug", hardware=hw, num_layers=3, num_decoder_layers=1)
    plan = galvatron.Plan.uniform(2, 4, global_batch_size=4)
    # decoder layers (self + cross attention) cost more than encoder layers: the profile follows
    assert galvatron.estimate(plan, mp, hw).step_time_s > galvatron.estimate(plan, deeper, hw).step_time_s
    res = galvatron.search(mp, hw, memory_gb=4, global_batch_size=4, uniform_baseline=False)
    assert res.plan.num_layers == 4
