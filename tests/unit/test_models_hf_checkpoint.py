"""Loading local HF checkpoints (config.json + safetensors), whole and one stage at a time."""

from __future__ import annotations

import json
import os
import re

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
        self.real, self.read, self.opened = real, [], []

    def __call__(self, *args, **kwargs):
        self.opened.append(os.path.basename(args[0]))
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


# ---------------------------------------------------------------------------- sharded checkpoints

SHARD = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")


def tiny_rope_biased_llama(layers: int = 3):
    """LLaMA with llama3 RoPE scaling and q/k/v/o + MLP biases (the features people load)."""
    from tests.unit.models_hf_util import tiny_hf_llama

    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16}
    return tiny_hf_llama(num_hidden_layers=layers, attention_bias=True, mlp_bias=True,
                         rope_theta=500000.0, rope_scaling=rope)


def _index(path):
    with open(path / "model.safetensors.index.json") as f:
        return json.load(f)


def test_sharded_checkpoint_written_by_save_hf_checkpoint_roundtrips(tmp_path):
    """HF layout (index + model-0000k-of-0000n shards, no shard over the limit unless one tensor
    is), same keys as transformers' own save_pretrained, exact round trip through our loader,
    and transformers loads it to the same logits."""
    hf = tiny_rope_biased_llama()
    ours = M.from_hf(hf)
    limit = 40_000
    files = M.save_hf_checkpoint(ours, tmp_path / "ours", max_shard_bytes=limit)
    index = _index(tmp_path / "ours")
    n = len(files)
    assert n > 3
    assert sorted(os.path.basename(f) for f in files) == [
        f"model-{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    assert set(index["weight_map"].values()) == {os.path.basename(f) for f in files}
    with safetensors.safe_open(files[0], framework="pt") as f:
        assert set(f.keys()) == {k for k, v in index["weight_map"].items()
                                 if v == os.path.basename(files[0])}
    sizes = {f: os.path.getsize(f) for f in files}
    total = 0
    for f in files:
        with safetensors.safe_open(f, framework="pt") as h:
            tensors = [h.get_tensor(k) for k in h.keys()]
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        total += nbytes
        assert nbytes <= limit or len(tensors) == 1, (f, sizes[f])
    assert index["metadata"]["total_size"] == total
    hf.save_pretrained(tmp_path / "theirs", safe_serialization=True)
    from safetensors.torch import load_file

    assert set(index["weight_map"]) == set(load_file(tmp_path / "theirs" / "model.safetensors"))
    back = M.load_hf_checkpoint(tmp_path / "ours")
    for (name, a), b in zip(ours.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    x = torch.randint(0, 512, (2, 8))
    assert max_logit_diff(again, ours, input_ids=x) < ATOL
    assert again.config.rope_parameters == hf.config.rope_parameters


def test_transformers_sharded_checkpoint_loads_with_same_logits(tmp_path):
    hf = tiny_rope_biased_llama()
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="60KB")
    assert len({SHARD.fullmatch(f) is not None for f in os.listdir(tmp_path)
                if f.endswith(".safetensors")}) == 1  # only shards, no model.safetensors
    assert len(set(_index(tmp_path)["weight_map"].values())) > 2
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    x = torch.randint(0, 512, (2, 8))
    assert max_logit_diff(hf, M.load_hf_checkpoint(tmp_path), input_ids=x,
                          attention_mask=mask) < ATOL


def _stage_keys(index, layers, embed, head):
    pre = tuple(f"model.layers.{i}." for i in layers)
    return {k for k in index["weight_map"] if k.startswith(pre)
            or (embed and k == "model.embed_tokens.weight")
            or (head and k in ("model.norm.weight", "lm_head.weight"))}


@pytest.mark.parametrize("stage", [([0], True, False), ([1], False, False), ([2], False, True),
                                   ([0, 1, 2], False, False)])
def test_each_rank_reads_only_its_tensors_and_opens_only_their_shards(tmp_path, monkeypatch,
                                                                       stage):
    """A pipeline rank's part (layers, embedding or head): exactly its tensors are read, and
    only the shards that hold them are opened (the index says where they are)."""
    layers, embed, head = stage
    M.save_hf_checkpoint(M.from_hf(tiny_rope_biased_llama()), tmp_path, max_shard_bytes=40_000)
    index = _index(tmp_path)
    spy = _Spy(safetensors.safe_open)
    monkeypatch.setattr(safetensors, "safe_open", spy)
    part = M.load_hf_checkpoint(tmp_path, layer_indices=layers, include_embedding=embed,
                                include_head=head)
    want = _stage_keys(index, layers, embed, head)
    assert sorted(spy.read) == sorted(want)  # each tensor once, nothing else
    assert sorted(spy.opened) == sorted({index["weight_map"][k] for k in want})  # each once
    assert len(spy.opened) < len(set(index["weight_map"].values()))
    assert part.layers[layers[0]].attn.q_proj.bias is not None
    assert not part.layers[layers[0]].attn.q_proj.bias.is_meta
    assert part.embed.tok.weight.is_meta != embed


def test_resaving_with_fewer_shards_removes_the_stale_ones(tmp_path):
    model = M.from_hf(tiny_rope_biased_llama(layers=2))
    many = M.save_hf_checkpoint(model, tmp_path, max_shard_bytes=40_000)
    one = M.save_hf_checkpoint(model, tmp_path)
    assert len(many) > 1 and [os.path.basename(f) for f in one] == ["model.safetensors"]
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith((".safetensors", ".json"))) == [
        "config.json", "model.safetensors"]
    M.load_hf_checkpoint(tmp_path)


@pytest.mark.parametrize("edit,match", [
    (lambda ix: ix["weight_map"].update({"model.norm.weight": "../model-00001-of-00002.safetensors"}),
     r"weight_map\['model.norm.weight'\] = '../model-00001-of-00002.safetensors': accepted"),
    (lambda ix: ix["weight_map"].update({"model.norm.weight": "/etc/passwd"}), "accepted: the name"),
    (lambda ix: ix["weight_map"].update({"model.norm.weight": "model-00009-of-00009.safetensors"}),
     "does not exist"),
    (lambda ix: ix.pop("weight_map"), "'weight_map' must be a non-empty object"),
    (lambda ix: ix["weight_map"].update({"model.norm.weight": 3}), "accepted: the name"),
])
def test_hostile_shard_index_is_a_value_error_naming_the_entry(tmp_path, edit, match):
    M.save_hf_checkpoint(M.from_hf(tiny_llama(layers=2)), tmp_path, max_shard_bytes=100_000)
    index = _index(tmp_path)
    edit(index)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=match):
        M.load_hf_checkpoint(tmp_path)


def test_index_naming_the_wrong_shard_for_a_tensor_is_a_value_error(tmp_path):
    M.save_hf_checkpoint(M.from_hf(tiny_llama(layers=2)), tmp_path, max_shard_bytes=100_000)
    index = _index(tmp_path)
    files = sorted(set(index["weight_map"].values()))
    key = next(k for k, v in index["weight_map"].items() if v == files[0])
    index["weight_map"][key] = files[-1]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"has no tensor '{re.escape(key)}'"):
        M.load_hf_checkpoint(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read it as JSON"):
        M.load_hf_checkpoint(tmp_path)


# config.json of meta-llama/Llama-3.1-8B as published (transformers 4.43 format: rope_scaling
# and rope_theta at the top level)
LLAMA31_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": False, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": True, "vocab_size": 128256,
}


def test_published_llama31_config_gives_the_zoo_flavour(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(LLAMA31_8B_CONFIG))
    hc = transformers.AutoConfig.from_pretrained(tmp_path)
    imported = M.FAMILIES["llama"].hf.config_from_hf(hc)
    assert imported.dim == 128  # transformers fills head_dim in; ours leaves it derived
    assert imported.replace(name="llama3.1-8b", head_dim=None) == M.get_config("llama3.1-8b")


def test_checkpoint_with_a_transformers4_rope_config_loads_with_same_logits(tmp_path):
    """config.json written the way the Hub's Llama 3.x checkpoints are (rope_scaling +
    top-level rope_theta), weights sharded."""
    hf = tiny_rope_biased_llama()
    hf.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="60KB")
    cfg = json.loads((tmp_path / "config.json").read_text())
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = params
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    ours = M.load_hf_checkpoint(tmp_path)
    assert ours.config.rope_type.value == "llama3" and ours.config.rope_theta == 500000.0
    assert max_logit_diff(hf, ours, input_ids=torch.randint(0, 512, (2, 8))) < ATOL


@pytest.mark.parametrize("family", list(TINY_HF))
def test_save_hf_checkpoint_of_every_family_loads_in_transformers_and_here(tmp_path, family):
    """Sharded (tiny shards) and whole: transformers' from_pretrained and our loader both give
    the original logits (the training job's export_hf writes this way)."""
    make, inputs = TINY_HF[family]
    hf = make()
    ours = M.from_hf(hf)
    for sub, limit in (("sharded", 40_000), ("whole", 2**30)):
        files = M.save_hf_checkpoint(ours, tmp_path / sub, max_shard_bytes=limit)
        assert (len(files) > 1) == (sub == "sharded")
        again = type(hf).from_pretrained(tmp_path / sub).eval()
        x = inputs()
        assert max_logit_diff(again, ours, **x) < ATOL
        assert max_logit_diff(hf, M.load_hf_checkpoint(tmp_path / sub), **x) < ATOL
