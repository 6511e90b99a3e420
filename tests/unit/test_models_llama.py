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


LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
# each new option alone, then combined; "dynamic" only acts past max_position_embeddings
# (seq 12 > 6), where transformers grows the base; below it, it is the default
NEW_OPTIONS = {
    "linear": ({"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, 8),
    "dynamic-past-max": ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0},
                          "max_position_embeddings": 6}, 12),
    "dynamic-within-max": ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, 8),
    "llama3": ({"rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE}, 8),
    "attention-bias": ({"attention_bias": True}, 8),
    "mlp-bias": ({"mlp_bias": True}, 8),
    "all-combined": ({"attention_bias": True, "mlp_bias": True, "rope_theta": 500000.0,
                      "rope_scaling": LLAMA3_ROPE, "num_key_value_heads": 4}, 8),
    "mistral-window-linear": ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, 8),
    # Qwen2: q/k/v biased, o and the MLP not
    "qwen2-qkv-bias": ({"tie_word_embeddings": True}, 8),
    "qwen2-window-llama3": ({"use_sliding_window": True, "sliding_window": 3,
                             "max_window_layers": 0, "rope_scaling": LLAMA3_ROPE}, 8),
}


def _kind(option: str) -> str:
    return option.split("-")[0] if option.startswith(("mistral", "qwen2")) else "llama"


def _inputs(seq: int, masked: bool) -> dict:
    out = {"input_ids": ids(seq=seq)}
    if masked:
        out["attention_mask"] = right_padding_mask(seq=seq)
    return out


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("option", list(NEW_OPTIONS))
def test_llama_rope_scaling_and_biases_match_transformers(option, masked):
    kw, seq = NEW_OPTIONS[option]
    hf = tiny_hf_llama(_kind(option), **kw)
    ours = M.from_hf(hf)
    assert max_logit_diff(hf, ours, **_inputs(seq, masked)) < ATOL


@pytest.mark.parametrize("option", [o for o in NEW_OPTIONS if o != "dynamic-within-max"])
def test_llama_each_new_option_changes_the_logits(option):
    """The comparison above can fail: without the option's effect the logits differ."""
    kw, seq = NEW_OPTIONS[option]
    hf = tiny_hf_llama(_kind(option), **kw)
    ours = M.from_hf(hf)
    with torch.no_grad():
        for layer in ours.layers:
            if "rope_scaling" in kw:
                layer.attn.rope_scaling = None
            for name, p in layer.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
    assert max_logit_diff(hf, ours, **_inputs(seq, False)) > 100 * ATOL


@pytest.mark.parametrize("option", ["linear", "dynamic-past-max", "llama3", "all-combined",
                                    "qwen2-qkv-bias", "qwen2-window-llama3"])
def test_llama_rope_scaling_and_biases_roundtrip_to_hf(option):
    kw, _ = NEW_OPTIONS[option]
    hf = tiny_hf_llama(_kind(option), **kw)
    assert_roundtrip_exact(hf)
    back = M.to_hf(M.from_hf(hf))
    assert type(back) is type(hf)
    for key in ("attention_bias", "mlp_bias", "max_position_embeddings", "layer_types",
                "sliding_window"):
        assert getattr(back.config, key, None) == getattr(hf.config, key, None), key
    assert back.config.rope_parameters == hf.config.rope_parameters


def test_qwen2_with_mixed_sliding_and_full_layers_is_rejected_by_name():
    hf_cfg = transformers.Qwen2Config(**{**LLAMA_TINY, "use_sliding_window": True,
                                         "sliding_window": 3, "max_window_layers": 1})
    with pytest.raises(ValueError, match="layer_types: .* mixes sliding and full attention"):
        M.FAMILIES["llama"].hf.config_from_hf(hf_cfg)


def test_llama_biases_transformers_cannot_hold_are_refused_on_export():
    model = M.build("llama-debug", seed=0, attention_bias=True, o_proj_bias=False, mlp_bias=True)
    with pytest.raises(ValueError, match="o_proj_bias=False cannot be exported"):
        M.to_hf(model)
    with pytest.raises(ValueError, match="MistralForCausalLM has no biases"):
        M.to_hf(M.build("llama-debug", seed=0, mlp_bias=True, sliding_window=4))


def test_llama_dynamic_rope_equals_default_up_to_the_original_length():
    """Dynamic NTK (stateless): the default base for s <= L, a larger base beyond it."""
    from galvatron.models.rope import RopeScaling, inv_freq

    dyn = RopeScaling("dynamic", factor=4.0, original_max_seq_len=16)
    assert torch.equal(inv_freq(16, 1e4, 16, dyn), inv_freq(16, 1e4, 16))
    base = 1e4 * (4.0 * 32 / 16 - 3.0) ** (16 / 14)
    assert torch.allclose(inv_freq(16, 1e4, 32, dyn), inv_freq(16, base, 32), rtol=0, atol=0)
    lin = RopeScaling("linear", factor=4.0)
    assert torch.equal(inv_freq(16, 1e4, 8, lin), inv_freq(16, 1e4, 8) / 4.0)


def test_llama3_rope_keeps_high_divides_low_and_blends_middle_frequencies():
    """Meta's Llama 3.1 rule: wavelength < L/high kept, > L/low divided by factor, between
    them a linear blend in L/wavelength (checked against the formula frequency by frequency)."""
    import math

    from galvatron.models.rope import RopeScaling, inv_freq

    r = RopeScaling("llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_seq_len=64)
    plain, scaled = inv_freq(32, 1e4, 8).tolist(), inv_freq(32, 1e4, 8, r).tolist()
    kinds = set()
    for f, g in zip(plain, scaled, strict=True):
        wavelen = 2 * math.pi / f
        if wavelen < 64 / 4:
            want, kinds = f, kinds | {"high"}
        elif wavelen > 64 / 1:
            want, kinds = f / 8, kinds | {"low"}
        else:
            a = (64 / wavelen - 1) / (4 - 1)
            want, kinds = (1 - a) * f / 8 + a * f, kinds | {"middle"}
        assert g == pytest.approx(want, rel=1e-6)
    assert kinds == {"high", "low", "middle"}


@pytest.mark.parametrize("params,match", [
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}, "rope_type"),
    ({"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5},
     "partial_rotary_factor"),
])
def test_llama_unsupported_rope_is_rejected_by_name(params, match):
    hf_cfg = transformers.LlamaConfig(**LLAMA_TINY)
    hf_cfg.rope_parameters = {**params, "rope_theta": 10000.0}
    with pytest.raises(ValueError, match=match):
        M.FAMILIES["llama"].hf.config_from_hf(hf_cfg)


@pytest.mark.parametrize("overrides,match", [
    ({"rope_type": "yarn"}, "rope_type: 'yarn' is not accepted"),
    ({"rope_type": "linear", "rope_factor": 0.5}, "rope_factor must be a number >= 1"),
    ({"rope_type": "llama3", "rope_factor": 8.0, "rope_low_freq_factor": 4.0,
      "rope_high_freq_factor": 1.0}, "0 < low < high"),
    ({"rope_original_max_seq_len": 0}, "rope_original_max_seq_len must be >= 1"),
    ({"attention_bias": "yes"}, "attention_bias must be true or false"),
])
def test_llama_bad_rope_or_bias_config_is_a_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        M.get_config("llama-debug", **overrides)


def test_llama31_flavours_have_the_published_parameter_counts():
    """Meta's model cards: 8,030,261,248 and 70,553,706,496 parameters."""
    for name, count in (("llama3.1-8b", 8_030_261_248), ("llama3.1-70b", 70_553_706_496)):
        assert M.spec(name).param_count() == count
        cfg = M.get_config(name)
        assert (cfg.rope_type.value, cfg.rope_factor, cfg.rope_original_max_seq_len,
                cfg.rope_theta, cfg.max_seq_len) == ("llama3", 8.0, 8192, 500000.0, 131072)
    assert M.build("llama3.1-8b", device="meta").num_params() == 8_030_261_248


@pytest.mark.parametrize("kw", [dict(attention_bias=True, mlp_bias=True),
                                dict(attention_bias=True, o_proj_bias=False)],
                         ids=["llama-all-biases", "qwen2-qkv-biases"])
def test_llama_bias_spec_counts_equal_the_built_model_and_the_analytic_profile(kw):
    from galvatron.profiles.analytic import model_profile

    model = M.build("llama-debug", seed=0, **kw)
    spec = M.spec(model.config)
    assert spec.param_count() == model.num_params()
    for i, layer in enumerate(model.layers):
        assert sum(p.numel() for p in layer.parameters()) == spec.layer(i).param_count
    plain = M.spec("llama-debug").layer(0).param_count
    c = model.config
    qkv, o, mlp = (c.num_heads + 2 * c.num_kv_heads) * c.dim, c.hidden_size, 2 * c.ffn_hidden + c.hidden_size
    assert spec.layer(0).param_count - plain == qkv + (o if c.o_bias else 0) + (mlp if c.mlp_bias else 0)
    prof = model_profile("llama-debug", max_degree=2, **kw)
    assert prof.layer_types[0].param_count == spec.layer(0).param_count


@pytest.mark.parametrize("padded", [False, True])
def test_llama_bias_and_rope_scaling_activation_bytes_equal_measured(padded):
    """Biases and scaled RoPE save nothing more (bias adds keep no input); a tp=2 shard too."""
    from galvatron.models.spec import measure_saved_bytes
    from tests.unit.models_hf_util import debug_batch, debug_labels
    from tests.unit.test_models_spec import _shard_block, measured_parts

    model = M.build("llama-debug", seed=0, attention_bias=True, mlp_bias=True, rope_type="llama3",
                    rope_factor=8.0, rope_original_max_seq_len=8).train()
    spec = M.spec(model.config)
    inputs = debug_batch("llama-debug", 2, 8, padded)
    _, layers, _ = measured_parts(model, inputs, debug_labels("llama-debug", inputs))
    assert layers == [spec.layer(i).act_bytes(2, 8, 4, padded=padded) for i in range(2)]
    layer = model.layers[0]
    _shard_block(layer, 2)
    x = torch.randn(2, 16, 64, requires_grad=True)
    _, got = measure_saved_bytes(layer, M.Carry(x), exclude=list(layer.parameters()))
    assert got == spec.layer(0).act_bytes(2, 16, 4, tp=2)
