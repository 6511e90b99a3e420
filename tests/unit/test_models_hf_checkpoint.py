"""Loading local HF checkpoints (config.json + safetensors), whole and one stage at a time."""

from __future__ import annotations

import pytest
import torch

import galvatron.models as M
from tests.unit.models_hf_util import ATOL, TINY_HF, max_logit_diff, tiny_hf_t5

transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors")


def tiny_llama(layers: int = 3):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                                   bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=64, n_layer=3, n_head=4, vocab_size=512, n_positions=64,
                                  bos_token_id=None, eos_token_id=None)
    return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("family", list(TINY_HF))
def test_load_hf_checkpoint_gives_same_logits(tmp_path, family):
    make, inputs = TINY_HF[family]
    hf = make()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    assert not list(tmp_path.glob("*.bin"))
    ours = M.load_hf_checkpoint(tmp_path)
    assert max_logit_diff(hf, ours, **inputs()) < ATOL


class _Spy:
    """Wraps safetensors.safe_open and records every tensor read."""

    def __init__(self, real):
        self.real, self.read = real, []

    def __call__(self, *args, **kwargs):
        handle = self.real(*args, **kwargs)
        spy = self

        class Handle:
            def keys(self):
                return handle.keys()

            def get_tensor(self, key):
                spy.read.append(key)
                return handle.get_tensor(key)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        return Handle()


def test_partial_load_reads_only_the_requested_layers(tmp_path, monkeypatch):
    hf = tiny_llama(layers=3)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    spy = _Spy(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", spy)
    model = M.load_hf_checkpoint(tmp_path, layer_indices=[1], include_embedding=False,
                                 include_head=False)
    assert spy.read and all(k.startswith("model.layers.1.") for k in spy.read)
    assert len(spy.read) == 9  # 2 norms + q/k/v/o + gate/up/down
    assert model.layers[0].attn.q_proj.weight.is_meta and model.embed.tok.weight.is_meta
    assert torch.equal(model.layers[1].mlp.up_proj.weight, hf.model.layers[1].mlp.up_proj.weight)
    # the stage computes what the full model computes for that layer
    full = M.from_hf(hf)
    x = M.Carry(torch.randn(2, 8, 64))
    with torch.no_grad():
        assert torch.equal(model.layers[1](x).hidden, full.layers[1](x).hidden)


def test_partial_load_of_tied_head_reads_the_embedding_tensor(tmp_path, monkeypatch):
    hf = tiny_gpt2()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    spy = _Spy(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", spy)
    model = M.load_hf_checkpoint(tmp_path, layer_indices=[2], include_embedding=False)
    assert "transformer.wte.weight" in spy.read and "transformer.wpe.weight" not in spy.read
    assert not any(k.startswith(("transformer.h.0.", "transformer.h.1.")) for k in spy.read)
    assert torch.equal(model.head.lm_head.weight, hf.lm_head.weight)


def test_partial_load_of_a_t5_decoder_layer_reads_the_shared_bias_table(tmp_path, monkeypatch):
    hf = tiny_hf_t5()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    spy = _Spy(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", spy)
    model = M.load_hf_checkpoint(tmp_path, layer_indices=[3], include_embedding=False,
                                 include_head=False)
    bias = "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    assert bias in spy.read
    assert all(k.startswith("decoder.block.1.") or k == bias for k in spy.read)
    full = M.from_hf(hf)
    carry = M.Carry(torch.randn(2, 5, 64), None, torch.randn(2, 7, 64), None)
    with torch.no_grad():
        assert torch.equal(model.layers[3](carry).hidden, full.layers[3](carry).hidden)


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path):
    hf = tiny_llama(layers=2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    from safetensors.torch import load_file, save_file

    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.0.mlp.extra.weight"] = tensors.pop("model.layers.0.mlp.up_proj.weight")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError) as e:
        M.load_hf_checkpoint(tmp_path)
    msg = str(e.value)
    assert "missing keys ['model.layers.0.mlp.up_proj.weight']" in msg
    assert "unexpected keys ['model.layers.0.mlp.extra.weight']" in msg


def test_unsupported_architecture_is_named(tmp_path):
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=100)
    cfg.architectures = ["BertForQuestionAnswering"]
    cfg.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="BertForQuestionAnswering"):
        M.load_hf_checkpoint(tmp_path)
