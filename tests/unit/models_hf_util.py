"""Shared helpers of the model-zoo tests: tiny random Hugging Face models (built locally from
configs, random init, nothing downloaded), example batches for every debug flavour,
comparisons."""

from __future__ import annotations

import torch

import galvatron.models as M

ATOL = 1e-5


def ids(batch: int = 2, seq: int = 8, vocab: int = 512, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def right_padding_mask(batch: int = 2, seq: int = 8) -> torch.Tensor:
    """Row 0 full, row 1 padded after 5 tokens (right padding keeps every query defined)."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 5:] = 0
    return mask


def max_logit_diff(hf_model, ours, **inputs) -> float:
    with torch.no_grad():
        return (hf_model(**inputs).logits - ours(**inputs)).abs().max().item()


def assert_roundtrip_exact(hf_model) -> None:
    """hf -> ours -> hf gives the identical state dict."""
    back = M.to_hf(M.from_hf(hf_model))
    a, b = hf_model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------- batches

VOCAB = 512
DEBUG = ["gpt2-debug", "llama-debug", "bert-debug", "t5-debug", "vit-debug", "swin-debug"]


def pixels(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def debug_batch(name: str, b: int = 2, s: int = 8, padded: bool = False) -> dict[str, torch.Tensor]:
    """Inputs for a debug flavour (padding: the last two tokens of sample 0)."""
    if name in ("vit-debug", "swin-debug"):
        return {"pixel_values": pixels(b, 32, seed=b)}
    out = {"input_ids": ids(b, s, VOCAB, seed=b * 100 + s)}
    if padded:
        mask = torch.ones(b, s, dtype=torch.long)
        mask[0, -2:] = 0
        out["attention_mask"] = mask
    if name == "t5-debug":
        out["decoder_input_ids"] = ids(b, s, VOCAB, seed=b * 100 + s + 1)
        if padded:
            out["decoder_attention_mask"] = out["attention_mask"].flip(0)
    return out


def debug_labels(name: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if "pixel_values" in batch:
        return torch.arange(batch["pixel_values"].shape[0]) % 10
    return batch.get("decoder_input_ids", batch["input_ids"])


# ---------------------------------------------------------------------------- tiny HF models


def _hf():
    import transformers

    return transformers


def tiny_hf_gpt2(**kw):
    torch.manual_seed(0)
    t = _hf()
    cfg = t.GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=64,
                       bos_token_id=None, eos_token_id=None, **kw)
    return t.GPT2LMHeadModel(cfg).eval()


LLAMA_TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                  max_position_embeddings=64, bos_token_id=None, eos_token_id=None,
                  pad_token_id=None)


def tiny_hf_llama(kind: str = "llama", **kw):
    torch.manual_seed(0)
    t = _hf()
    if kind == "mistral":
        return t.MistralForCausalLM(t.MistralConfig(**{**LLAMA_TINY, "sliding_window": 3, **kw})).eval()
    if kind == "qwen2":
        hf = t.Qwen2ForCausalLM(t.Qwen2Config(**{**LLAMA_TINY, **kw})).eval()
    else:
        hf = t.LlamaForCausalLM(t.LlamaConfig(**{**LLAMA_TINY, **kw})).eval()
    with torch.no_grad():  # HF initialises biases to 0: make them matter
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    return hf


def tiny_hf_bert(**kw):
    torch.manual_seed(0)
    t = _hf()
    cfg = t.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=64, **kw)
    return t.BertForMaskedLM(cfg).eval()


def tiny_hf_t5(**kw):
    torch.manual_seed(0)
    t = _hf()
    kw = {"num_layers": 2, **kw}
    cfg = t.T5Config(d_model=64, d_kv=16, d_ff=128, num_heads=4, vocab_size=VOCAB,
                     decoder_start_token_id=0, **kw)
    hf = t.T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # HF's N(0, 1) embeddings give unscaled logits ~1e2; keep them O(1)
        hf.shared.weight.mul_(0.05)
        if hf.lm_head.weight is not hf.shared.weight:  # transformers 4 unties T5 v1.1
            hf.lm_head.weight.mul_(0.05)
    return hf


def tiny_hf_vit():
    torch.manual_seed(0)
    t = _hf()
    cfg = t.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=128, image_size=32, patch_size=8, num_labels=10)
    return t.ViTForImageClassification(cfg).eval()


def tiny_hf_swin():
    torch.manual_seed(0)
    t = _hf()
    cfg = t.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2, 2],
                       num_heads=[2, 2, 4], window_size=4, num_labels=10)
    hf = t.SwinForImageClassification(cfg).eval()
    with torch.no_grad():  # non-trivial relative position biases
        for name, p in hf.named_parameters():
            if "relative_position_bias_table" in name:
                p.normal_()
    return hf


# family -> (tiny HF model builder, example inputs of it)
TINY_HF = {
    "gpt2": (tiny_hf_gpt2, lambda: {"input_ids": ids()}),
    "llama": (tiny_hf_llama, lambda: {"input_ids": ids()}),
    "bert": (tiny_hf_bert, lambda: {"input_ids": ids()}),
    "t5": (tiny_hf_t5, lambda: {"input_ids": ids(), "decoder_input_ids": ids(seq=6, seed=1)}),
    "vit": (tiny_hf_vit, lambda: {"pixel_values": pixels()}),
    "swin": (tiny_hf_swin, lambda: {"pixel_values": pixels()}),
}
