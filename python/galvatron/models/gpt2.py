"""GPT-2 (Radford et al. 2019): learned positions, pre-LayerNorm, GELU(tanh) MLP, tied head.

``activation``: the MLP activation (GPT-2's ``gelu_new`` is ``gelu_tanh``; Hugging Face
``activation_function`` values map through ``HF_ACTIVATIONS``).

Carry: ``Carry(hidden [b, s, h], mask [b, s] or None)``; layers are causal, the padding mask
(HF ``attention_mask``) additionally hides padded keys. Positions are ``0..s-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from galvatron.models import spec as S
from galvatron.models.base import (
    Carry,
    Family,
    GalvatronModel,
    ModelConfig,
    check_divides,
    check_positive,
)
from galvatron.models.hf import HFAdapter, Rule, same, split, transposed
from galvatron.models.layers import MLP, Activation, Attention, LMHead, PreNormBlock, dropout
from galvatron.plan import _enum_value

# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class GPT2Config(ModelConfig):
    family = "gpt2"
    name: str = "gpt2-debug"
    vocab_size: int = 512
    max_seq_len: int = 128
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_hidden: int = 256
    layer_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    activation: Activation = Activation.GELU_TANH

    def validate(self) -> None:
        super().validate()
        object.__setattr__(self, "activation",
                           _enum_value(Activation, self.activation, "activation"))
        check_positive(self, "vocab_size", "max_seq_len", "hidden_size", "num_layers",
                       "num_heads", "ffn_hidden")
        check_divides(self, "num_heads", "hidden_size")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _flavour(name: str, h: int, layers: int, heads: int) -> GPT2Config:
    return GPT2Config(name=name, vocab_size=50257, max_seq_len=1024, hidden_size=h,
                      num_layers=layers, num_heads=heads, ffn_hidden=4 * h)


FLAVOURS = {
    "gpt2-debug": GPT2Config(),
    # the training job's default: 4 layers x 128 wide, trains in under a minute on 2 CPU cores
    "gpt2-mini": GPT2Config(name="gpt2-mini", hidden_size=128, num_layers=4),
    "gpt2-small": _flavour("gpt2-small", 768, 12, 12),
    "gpt2-medium": _flavour("gpt2-medium", 1024, 24, 16),
    "gpt2-large": _flavour("gpt2-large", 1280, 36, 20),
    "gpt2-xl": _flavour("gpt2-xl", 1600, 48, 25),
}
ALIASES = {"gpt2": "gpt2-small"}  # Hugging Face's name of the 124M model


class GPT2Embed(nn.Module):
    def __init__(self, cfg: GPT2Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.hidden_size)
        self.dropout = cfg.dropout

    def forward(self, batch: dict[str, Tensor]) -> Carry:
        ids = batch["input_ids"]
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = dropout(self.wte(ids) + self.wpe(pos), self.dropout, self.training)
        return Carry(x, batch.get("attention_mask"))


class GPT2Model(GalvatronModel):
    input_names = ("input_ids", "attention_mask")
    shift_labels = True

    def __init__(self, config: GPT2Config) -> None:
        super().__init__(config)
        c = config
        self.embed = GPT2Embed(c)
        self.layers = nn.ModuleList(
            PreNormBlock(
                "gpt2",
                nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps),
                Attention(c.hidden_size, c.num_heads, causal=True, backend=c.attn_backend),
                nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps),
                MLP(c.hidden_size, c.ffn_hidden, c.activation),
                c.dropout,
            )
            for _ in range(c.num_layers)
        )
        self.head = LMHead(nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps), c.hidden_size,
                           c.vocab_size)
        if c.tie_word_embeddings:
            self.head.lm_head.weight = self.embed.wte.weight
        self.record_ties()


# ---------------------------------------------------------------------------- spec


def gpt2_spec(c: GPT2Config) -> S.ModelSpec:
    h, f, v = c.hidden_size, c.ffn_hidden, c.vocab_size
    layer_params = 4 * h + 4 * h * h + 4 * h + 2 * h * f + f + h
    layer = S.prenorm_layer_spec("gpt2", c, S.gelu_mlp_saved(h, f, c.activation), layer_params,
                               4 * h * h + 2 * h * f, rms=False, rope=False, kv_heads=c.num_heads,
                               head_dim=c.head_dim)
    embed = S.LayerTypeSpec(
        "gpt2_embed", (v + c.max_seq_len) * h, h,
        saved=(S.SavedTensor("input_ids", per_token=1, elem=S.Elem.INT64, shard=S.Shard.NONE),
               S.SavedTensor("position_ids", per_seq=1, elem=S.Elem.INT64, shard=S.Shard.NONE)),
    )
    head = S.lm_head_spec("gpt2_head", h, v, 2 * h + v * h, rms=False)
    return S.ModelSpec(c.name, c.family, embed, head, {"gpt2": layer}, ("gpt2",) * c.num_layers,
                       c.max_seq_len, tied_param_count=v * h if c.tie_word_embeddings else 0)


# ---------------------------------------------------------------------------- Hugging Face


# Hugging Face ``activation_function`` -> ours (exact formulas; gelu_new / gelu_fast /
# gelu_pytorch_tanh are the same tanh approximation, gelu / gelu_python the erf GELU)
HF_ACTIVATIONS = {
    "gelu_new": Activation.GELU_TANH, "gelu_pytorch_tanh": Activation.GELU_TANH,
    "gelu_fast": Activation.GELU_TANH, "gelu": Activation.GELU, "gelu_python": Activation.GELU,
    "relu": Activation.RELU, "silu": Activation.SILU, "swish": Activation.SILU,
    "tanh": Activation.TANH, "quick_gelu": Activation.QUICK_GELU,
}
_TO_HF_ACTIVATION = {Activation.GELU_TANH: "gelu_new", Activation.GELU: "gelu",
                     Activation.RELU: "relu", Activation.SILU: "silu", Activation.TANH: "tanh",
                     Activation.QUICK_GELU: "quick_gelu"}


def _config_from_hf(hc: Any) -> GPT2Config:
    if hc.activation_function not in HF_ACTIVATIONS:
        raise ValueError(f"activation_function: {hc.activation_function!r} is not supported; "
                         f"accepted: {sorted(HF_ACTIVATIONS)}")
    return GPT2Config(name=getattr(hc, "name_or_path", "") or "gpt2-hf", vocab_size=hc.vocab_size,
                      activation=HF_ACTIVATIONS[hc.activation_function],
                      max_seq_len=hc.n_positions, hidden_size=hc.n_embd, num_layers=hc.n_layer,
                      num_heads=hc.n_head, ffn_hidden=hc.n_inner or 4 * hc.n_embd,
                      layer_norm_eps=hc.layer_norm_epsilon, dropout=hc.resid_pdrop,
                      tie_word_embeddings=hc.tie_word_embeddings)


def _config_to_hf(c: GPT2Config) -> Any:
    import transformers

    return transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_seq_len, n_embd=c.hidden_size,
        n_layer=c.num_layers, n_head=c.num_heads, n_inner=c.ffn_hidden,
        layer_norm_epsilon=c.layer_norm_eps, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
        attn_pdrop=0.0, activation_function=_TO_HF_ACTIVATION[c.activation],
        tie_word_embeddings=c.tie_word_embeddings, architectures=["GPT2LMHeadModel"],
        bos_token_id=None, eos_token_id=None,
    )


def _rules(c: GPT2Config) -> list[Rule]:
    r = [same("embed.wte.weight", "transformer.wte.weight"),
         same("embed.wpe.weight", "transformer.wpe.weight")]
    for i in range(c.num_layers):
        o, t = f"layers.{i}.", f"transformer.h.{i}."
        qkv = tuple(f"{o}attn.{n}_proj" for n in "qkv")
        r += [same(f"{o}norm1.weight", f"{t}ln_1.weight"), same(f"{o}norm1.bias", f"{t}ln_1.bias"),
              split(tuple(q + ".weight" for q in qkv), f"{t}attn.c_attn.weight", 1, True),
              split(tuple(q + ".bias" for q in qkv), f"{t}attn.c_attn.bias", 0),
              transposed(f"{o}attn.o_proj.weight", f"{t}attn.c_proj.weight"),
              same(f"{o}attn.o_proj.bias", f"{t}attn.c_proj.bias"),
              same(f"{o}norm2.weight", f"{t}ln_2.weight"), same(f"{o}norm2.bias", f"{t}ln_2.bias"),
              transposed(f"{o}mlp.fc_in.weight", f"{t}mlp.c_fc.weight"),
              same(f"{o}mlp.fc_in.bias", f"{t}mlp.c_fc.bias"),
              transposed(f"{o}mlp.fc_out.weight", f"{t}mlp.c_proj.weight"),
              same(f"{o}mlp.fc_out.bias", f"{t}mlp.c_proj.bias")]
    r += [same("head.norm.weight", "transformer.ln_f.weight"),
          same("head.norm.bias", "transformer.ln_f.bias")]
    if not c.tie_word_embeddings:
        r.append(same("head.lm_head.weight", "lm_head.weight"))
    return r


HF = HFAdapter(("GPT2LMHeadModel",), _config_from_hf, _config_to_hf, _rules,
               ignore=(r"lm_head\.weight", r"transformer\.h\.\d+\.attn\.(masked_)?bias"))
FAMILY = Family("gpt2", GPT2Config, GPT2Model, FLAVOURS, gpt2_spec, HF, ALIASES)
