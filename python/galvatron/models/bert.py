"""BERT (Devlin et al. 2019): bidirectional post-LayerNorm encoder with a masked-LM head.

Carry: ``Carry(hidden [b, s, h], mask [b, s] or None)``; the padding mask hides padded keys.
The embedding sums word, position (``0..s-1``) and token-type embeddings (``token_type_ids``,
default zeros) and normalises. Layers: ``norm1(x + attn(x))`` then ``norm2(x + mlp(x))``.
The MLM head (dense, GELU, LayerNorm, decoder tied to the word embeddings, own bias) predicts
every position; the loss is cross-entropy over ``labels`` != -100 (no shift).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
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
from galvatron.models.hf import HFAdapter, Rule, same, weight_bias
from galvatron.models.layers import MLP, Activation, Attention, dropout

# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class BertConfig(ModelConfig):
    family = "bert"
    name: str = "bert-debug"
    vocab_size: int = 512
    max_seq_len: int = 128
    type_vocab_size: int = 2
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_hidden: int = 256
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        check_positive(self, "vocab_size", "max_seq_len", "type_vocab_size", "hidden_size",
                       "num_layers", "num_heads", "ffn_hidden")
        check_divides(self, "num_heads", "hidden_size")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def _flavour(name: str, h: int, layers: int, heads: int) -> BertConfig:
    return BertConfig(name=name, vocab_size=30522, max_seq_len=512, hidden_size=h,
                      num_layers=layers, num_heads=heads, ffn_hidden=4 * h)


FLAVOURS = {
    "bert-debug": BertConfig(),
    "bert-base": _flavour("bert-base", 768, 12, 12),
    "bert-large": _flavour("bert-large", 1024, 24, 16),
}


class BertEmbed(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position = nn.Embedding(c.max_seq_len, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = c.dropout

    def forward(self, batch: dict[str, Tensor]) -> Carry:
        ids = batch["input_ids"]
        types = batch.get("token_type_ids")
        if types is None:
            types = torch.zeros_like(ids)
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word(ids) + self.token_type(types) + self.position(pos)
        return Carry(dropout(self.norm(x), self.dropout, self.training), batch.get("attention_mask"))


class BertLayer(nn.Module):
    layer_type = "bert"

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attn = Attention(c.hidden_size, c.num_heads, backend=c.attn_backend)
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = MLP(c.hidden_size, c.ffn_hidden, Activation.GELU)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = c.dropout

    def forward(self, carry: Carry) -> Carry:
        x = carry.hidden
        x = self.norm1(x + dropout(self.attn(x, carry.mask), self.dropout, self.training))
        x = self.norm2(x + dropout(self.mlp(x), self.dropout, self.training))
        return dataclasses.replace(carry, hidden=x)


class BertMLMHead(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size)

    def forward(self, carry: Carry) -> Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(carry.hidden))))


class BertModel(GalvatronModel):
    input_names = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.embed = BertEmbed(config)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))
        self.head = BertMLMHead(config)
        if config.tie_word_embeddings:
            self.head.decoder.weight = self.embed.word.weight
        self.record_ties()


# ---------------------------------------------------------------------------- spec


def postnorm_layer_spec(name: str, c: Any) -> S.LayerTypeSpec:
    """Post-norm encoder layer (BERT): the layer input feeds q/k/v; norms after residuals."""
    h, a, d, f = c.hidden_size, c.num_heads, c.head_dim, c.ffn_hidden
    sdpa, math = S.sdpa_saved("attn", a, a, d)
    # SDPA keeps a float copy of the [b, 1, 1, s] padding mask
    mask = [S.SavedTensor("attn.mask", per_token=1, shard=S.Shard.NONE, sp_split=False,
                          padded_only=True)]
    pre = [S.linear_input_saved("attn.input", h)]
    post = S.norm_saved("norm1", h, False) + [
        S.linear_input_saved("mlp.fc_in.input", h), S.SavedTensor("mlp.act.input", per_token=f),
        S.linear_input_saved("mlp.fc_out.input", f, column_parallel=False),
    ] + S.norm_saved("norm2", h, False)
    params = 4 * h * h + 4 * h + 2 * h * f + f + h + 4 * h
    return S.LayerTypeSpec(name, params, h, a, a, d, f, matmul_params=4 * h * h + 2 * h * f,
                           attn_ops=1, input_per_token=h, saved=tuple(pre + sdpa + mask + post),
                           saved_math=tuple(pre + math + post),
                           kept_selective=tuple(S.attn_kept_selective("attn", h, a, a, d, fused=True)
                                                + S.mlp_kept_selective("mlp", h, (f,))))


def bert_spec(c: BertConfig) -> S.ModelSpec:
    h, v = c.hidden_size, c.vocab_size
    ids = dict(elem=S.Elem.INT64, shard=S.Shard.NONE)
    embed = S.LayerTypeSpec(
        "bert_embed", (v + c.max_seq_len + c.type_vocab_size) * h + 2 * h, h,
        saved=(S.SavedTensor("input_ids", per_token=1, **ids),
               S.SavedTensor("token_type_ids", per_token=1, **ids),
               S.SavedTensor("position_ids", per_seq=1, **ids),
               *S.norm_saved("norm", h, False)))
    head_saved = [S.linear_input_saved("dense.input", h), S.SavedTensor("act.input", per_token=h),
                  *S.norm_saved("norm", h, False), S.linear_input_saved("decoder.input", h),
                  *S.loss_saved(v)]
    head = S.LayerTypeSpec("bert_head", h * h + 3 * h + v * h + v, h,
                           matmul_params=h * h + v * h, saved=tuple(head_saved))
    return S.ModelSpec(c.name, c.family, embed, head, {"bert": postnorm_layer_spec("bert", c)},
                       ("bert",) * c.num_layers, c.max_seq_len,
                       tied_param_count=v * h if c.tie_word_embeddings else 0)


# ---------------------------------------------------------------------------- Hugging Face


def _config_from_hf(hc: Any) -> BertConfig:
    if hc.hidden_act != "gelu":
        raise ValueError(f"hidden_act: {hc.hidden_act!r} is not supported; accepted: 'gelu'")
    pe = getattr(hc, "position_embedding_type", "absolute")
    if pe != "absolute":
        raise ValueError(f"position_embedding_type: {pe!r} is not supported; accepted: 'absolute'")
    return BertConfig(name=getattr(hc, "name_or_path", "") or "bert-hf", vocab_size=hc.vocab_size,
                      max_seq_len=hc.max_position_embeddings, type_vocab_size=hc.type_vocab_size,
                      hidden_size=hc.hidden_size, num_layers=hc.num_hidden_layers,
                      num_heads=hc.num_attention_heads, ffn_hidden=hc.intermediate_size,
                      layer_norm_eps=hc.layer_norm_eps, dropout=hc.hidden_dropout_prob,
                      tie_word_embeddings=hc.tie_word_embeddings)


def _config_to_hf(c: BertConfig) -> Any:
    import transformers

    return transformers.BertConfig(
        vocab_size=c.vocab_size, max_position_embeddings=c.max_seq_len,
        type_vocab_size=c.type_vocab_size, hidden_size=c.hidden_size,
        num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        intermediate_size=c.ffn_hidden, layer_norm_eps=c.layer_norm_eps,
        hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=0.0, hidden_act="gelu",
        tie_word_embeddings=c.tie_word_embeddings, architectures=["BertForMaskedLM"],
    )


def _rules(c: BertConfig) -> list[Rule]:
    e = "bert.embeddings."
    r = [same("embed.word.weight", f"{e}word_embeddings.weight"),
         same("embed.position.weight", f"{e}position_embeddings.weight"),
         same("embed.token_type.weight", f"{e}token_type_embeddings.weight"),
         *weight_bias("embed.norm", f"{e}LayerNorm")]
    for i in range(c.num_layers):
        o, t = f"layers.{i}.", f"bert.encoder.layer.{i}."
        for ours, hf in (("q_proj", "self.query"), ("k_proj", "self.key"),
                         ("v_proj", "self.value"), ("o_proj", "output.dense")):
            r += weight_bias(f"{o}attn.{ours}", f"{t}attention.{hf}")
        r += weight_bias(f"{o}norm1", f"{t}attention.output.LayerNorm")
        r += weight_bias(f"{o}mlp.fc_in", f"{t}intermediate.dense")
        r += weight_bias(f"{o}mlp.fc_out", f"{t}output.dense")
        r += weight_bias(f"{o}norm2", f"{t}output.LayerNorm")
    p = "cls.predictions."
    r += [*weight_bias("head.dense", f"{p}transform.dense"), *weight_bias("head.norm", f"{p}transform.LayerNorm"),
          same("head.decoder.bias", f"{p}bias")]
    if not c.tie_word_embeddings:
        r.append(same("head.decoder.weight", f"{p}decoder.weight"))
    return r


HF = HFAdapter(("BertForMaskedLM",), _config_from_hf, _config_to_hf, _rules,
               ignore=(r"cls\.predictions\.decoder\.(weight|bias)",
                       r"bert\.embeddings\.(position_ids|token_type_ids)"))
FAMILY = Family("bert", BertConfig, BertModel, FLAVOURS, bert_spec, HF)
