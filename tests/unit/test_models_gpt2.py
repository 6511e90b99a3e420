"""GPT-2: same logits/loss as transformers for the same weights, exact export, backends."""

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
    tiny_hf_gpt2,
)

transformers = pytest.importorskip("transformers")




@pytest.mark.parametrize("masked", [False, True])
def test_gpt2_logits_match_transformers(masked):
    hf = tiny_hf_gpt2()
    ours = M.from_hf(hf)
    inputs = {"input_ids": ids()}
    if masked:
        inputs["attention_mask"] = right_padding_mask()
    assert max_logit_diff(hf, ours, **inputs) < ATOL


def test_gpt2_loss_matches_transformers():
    hf = tiny_hf_gpt2()
    ours = M.from_hf(hf)
    x = ids()
    labels = x.clone()
    labels[0, :3] = -100
    with torch.no_grad():
        ref = hf(input_ids=x, labels=labels).loss
        got = ours.loss(ours(input_ids=x), {"labels": labels})
    assert abs(ref.item() - got.item()) < ATOL


def test_gpt2_to_hf_roundtrip_is_exact_and_splits_fused_qkv():
    hf = tiny_hf_gpt2()
    assert_roundtrip_exact(hf)
    ours = M.from_hf(hf)
    c_attn = hf.transformer.h[0].attn.c_attn.weight  # Conv1D: [in, 3*out]
    assert torch.equal(ours.layers[0].attn.k_proj.weight, c_attn[:, 64:128].t())


def test_gpt2_perturbed_weight_breaks_the_comparison():
    hf = tiny_hf_gpt2()
    ours = M.from_hf(hf)
    with torch.no_grad():
        ours.layers[1].mlp.fc_out.weight[0, 0] += 1e-2
    assert max_logit_diff(hf, ours, input_ids=ids()) > 10 * ATOL


def test_gpt2_head_is_tied_to_the_embedding():
    model = M.build("gpt2-debug", seed=0)
    assert model.head.lm_head.weight is model.embed.wte.weight
    imported = M.from_hf(tiny_hf_gpt2())
    assert imported.head.lm_head.weight is imported.embed.wte.weight
    empty = M.build("gpt2-debug", device="meta").to_empty(device="cpu")
    empty.retie()  # to_empty gives each module its own tensor
    assert empty.head.lm_head.weight is empty.embed.wte.weight
    assert model.tied_parameters() == [("embed.wte.weight", "head.lm_head.weight")]
    untied = M.build("gpt2-debug", seed=0, tie_word_embeddings=False)
    assert untied.tied_parameters() == []


def test_gpt2_math_backend_equals_sdpa():
    model = M.build("gpt2-debug", seed=1).eval()
    math = M.build("gpt2-debug", seed=1, attn_backend="math").eval()
    x, mask = ids(), right_padding_mask()
    with torch.no_grad():
        for kw in ({"input_ids": x}, {"input_ids": x, "attention_mask": mask}):
            assert (model(**kw) - math(**kw)).abs().max().item() < ATOL


ACTIVATIONS = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast", "gelu", "gelu_python", "relu",
               "silu", "swish", "tanh", "quick_gelu"]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_gpt2_activation_variants_match_transformers(act, masked):
    hf = tiny_hf_gpt2(activation_function=act)
    ours = M.from_hf(hf)
    inputs = {"input_ids": ids()}
    if masked:
        inputs["attention_mask"] = right_padding_mask()
    assert max_logit_diff(hf, ours, **inputs) < ATOL
    # the comparison can fail: another activation gives other logits
    other = M.from_hf(tiny_hf_gpt2(activation_function="relu" if act != "relu" else "tanh"))
    with torch.no_grad():
        assert (ours(**inputs) - other(**inputs)).abs().max() > 100 * ATOL
    assert M.to_hf(ours).config.activation_function in ("gelu_new", "gelu", "relu", "silu",
                                                        "tanh", "quick_gelu")
    assert_roundtrip_exact(hf)


def test_gpt2_unknown_activation_is_rejected_by_name():
    hf_cfg = transformers.GPT2Config(n_embd=64, n_layer=1, n_head=4, activation_function="mish")
    with pytest.raises(ValueError, match="activation_function: 'mish' is not supported"):
        M.FAMILIES["gpt2"].hf.config_from_hf(hf_cfg)
    with pytest.raises(ValueError, match="activation: 'mish' is not accepted"):
        M.get_config("gpt2-debug", activation="mish")


@pytest.mark.parametrize("act", ["relu", "tanh", "quick_gelu", "silu", "gelu"])
def test_gpt2_activation_bytes_equal_measured(act):
    """ReLU/tanh keep their output (= fc_out's input), quick GELU also its sigmoid."""
    from tests.unit.models_hf_util import debug_batch, debug_labels
    from tests.unit.test_models_spec import measured_parts

    model = M.build("gpt2-debug", seed=0, activation=act).train()
    spec = M.spec(model.config)
    inputs = debug_batch("gpt2-debug", 2, 8)
    _, layers, _ = measured_parts(model, inputs, debug_labels("gpt2-debug", inputs))
    assert layers == [spec.layer(i).act_bytes(2, 8, 4) for i in range(2)]
