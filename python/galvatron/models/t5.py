"""T5 (Raffel et al. 2020): encoder-decoder, relative position bias, cross-attention.

Carry (see :class:`~galvatron.models.base.Carry`): during encoder layers ``hidden`` is the
encoder stream and ``mask`` its padding mask (``attention_mask``), while ``memory`` /
``memory_mask`` carry the embedded ``decoder_input_ids`` and ``decoder_attention_mask``
untouched. The last encoder layer (type ``t5_encoder_last``: an encoder layer plus the encoder's
final RMSNorm) swaps the two streams: afterwards ``hidden`` is the decoder stream and
``memory`` the normalised encoder output that every decoder layer cross-attends to.

Depths: ``num_layers`` encoder layers then ``num_decoder_layers`` decoder layers (None: as many
as the encoder, as in Hugging Face's config), so ``layers`` has ``num_layers +
decoder_layers`` entries and the decoder starts at index ``num_layers``.

Relative position bias: one table per stack (encoder: bidirectional buckets, decoder: causal),
shared by all layers of the stack (``tied_parameters`` lists the aliases) and applied inside
``attn.core`` for the heads ``head_start .. head_start + local heads``. No ``1/sqrt(d)``
scaling (T5). The embedding is shared by encoder and decoder, and by the LM head when
``tie_word_embeddings`` (transformers 5 always ties; transformers 4 unties T5 v1.1); the
decoder output is scaled by ``d_model**-0.5`` when ``scale_decoder_outputs``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from galvatron.models import spec as S
from galvatron.models.base import Carry, Family, GalvatronModel, ModelConfig, check_positive
from galvatron.models.hf import HFAdapter, Rule, same
from galvatron.models.layers import (
    MLP,
    Activation,
    Attention,
    GatedMLP,
    RMSNorm,
    additive_mask,
    attention,
    build_attn_mask,
    dropout,
)

# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class T5Config(ModelConfig):
    family = "t5"
    name: str = "t5-debug"
    vocab_size: int = 512
    max_seq_len: int = 128  # only the default sequence length of the spec (no position limit)
    hidden_size: int = 64
    head_dim: int = 16
    num_heads: int = 4
    ffn_hidden: int = 128
    num_layers: int = 2  # encoder layers (and decoder layers unless num_decoder_layers is set)
    num_decoder_layers: int | None = None  # None: as many as num_layers (HF's convention)
    gated_gelu: bool = False  # T5 v1.1 "gated-gelu"; False = v1.0 ReLU MLP
    num_buckets: int = 32
    max_distance: int = 128
    layer_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True  # LM head = the shared embedding
    scale_decoder_outputs: bool = True  # multiply the decoder output by hidden_size**-0.5
    decoder_start_token_id: int = 0

    def validate(self) -> None:
        super().validate()
        check_positive(self, "vocab_size", "max_seq_len", "hidden_size", "head_dim", "num_heads",
                       "ffn_hidden", "num_layers", "num_buckets", "max_distance")
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if self.num_decoder_layers is not None and (
                isinstance(self.num_decoder_layers, bool) or not isinstance(self.num_decoder_layers, int)
                or self.num_decoder_layers < 1):
            raise ValueError(f"num_decoder_layers must be an integer >= 1 or None (= num_layers), "
                             f"got {self.num_decoder_layers!r}")

    @property
    def decoder_layers(self) -> int:
        """Decoder depth: ``num_decoder_layers``, or ``num_layers`` when it is None."""
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers


def _flavour(name: str, d: int, ff: int, heads: int, layers: int) -> T5Config:
    return T5Config(name=name, vocab_size=32128, max_seq_len=512, hidden_size=d, head_dim=64,
                    num_heads=heads, ffn_hidden=ff, num_layers=layers)


FLAVOURS = {
    "t5-debug": T5Config(),
    "t5-small": _flavour("t5-small", 512, 2048, 8, 6),
    "t5-base": _flavour("t5-base", 768, 3072, 12, 12),
    "t5-large": _flavour("t5-large", 1024, 4096, 16, 24),
}


def relative_buckets(q_len: int, k_len: int, bidirectional: bool, num_buckets: int,
                     max_distance: int, device: torch.device | None) -> Tensor:
    """``[q_len, k_len]`` bucket of ``key_pos - query_pos`` (Mesh TensorFlow / HF T5)."""
    rel = torch.arange(k_len, device=device)[None, :] - torch.arange(q_len, device=device)[:, None]
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0).long() * num_buckets
        rel = rel.abs()
    else:
        rel = -torch.clamp(rel, max=0)
    max_exact = num_buckets // 2
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(rel < max_exact, rel, large)


class T5Attention(Attention):
    """Attention with T5's relative position bias (``rel_bias``: ``[num_buckets, heads]``,
    shared by the layers of a stack; None for cross-attention)."""

    def __init__(self, c: T5Config, causal: bool, rel_bias: nn.Embedding | None) -> None:
        super().__init__(c.hidden_size, c.num_heads, head_dim=c.head_dim, bias=False,
                         causal=causal, backend=c.attn_backend, scale=1.0)
        self.rel_bias = rel_bias
        self.num_buckets, self.max_distance = c.num_buckets, c.max_distance
        self.head_start = 0

    def core(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        if self.rel_bias is None:  # cross-attention: plain attention over the encoder output
            return super().core(q, k, v, mask)
        heads = q.shape[2]
        buckets = relative_buckets(q.shape[1], k.shape[1], not self.causal, self.num_buckets,
                                   self.max_distance, q.device)
        table = self.rel_bias.weight[:, self.head_start:self.head_start + heads]
        bias = nn.functional.embedding(buckets, table).permute(2, 0, 1).unsqueeze(0)
        keep = build_attn_mask(mask, q.shape[1], k.shape[1], self.causal, device=q.device)
        if keep is None and self.causal:
            keep = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool, device=q.device).tril()
        if keep is not None:
            bias = bias + additive_mask(keep, bias.dtype)
        return attention(q, k, v, bias, False, self.backend, scale=1.0)


def _mlp(c: T5Config) -> nn.Module:
    if c.gated_gelu:
        return GatedMLP(c.hidden_size, c.ffn_hidden, Activation.GELU_TANH)
    return MLP(c.hidden_size, c.ffn_hidden, Activation.RELU, bias=False)


class T5EncoderLayer(nn.Module):
    def __init__(self, c: T5Config, rel_bias: nn.Embedding, last: bool) -> None:
        super().__init__()
        self.layer_type = "t5_encoder_last" if last else "t5_encoder"
        self.swaps_streams = last  # returns Carry(memory, memory_mask, hidden, mask)
        self.norm1 = RMSNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.attn = T5Attention(c, causal=False, rel_bias=rel_bias)
        self.norm2 = RMSNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = _mlp(c)
        self.final_norm = RMSNorm(c.hidden_size, eps=c.layer_norm_eps) if last else None
        self.dropout = c.dropout

    def forward(self, carry: Carry) -> Carry:
        x = carry.hidden
        x = x + dropout(self.attn(self.norm1(x), carry.mask), self.dropout, self.training)
        x = x + dropout(self.mlp(self.norm2(x)), self.dropout, self.training)
        if self.final_norm is None:
            return dataclasses.replace(carry, hidden=x)
        x = dropout(self.final_norm(x), self.dropout, self.training)
        return Carry(carry.memory, carry.memory_mask, x, carry.mask)  # swap the streams


class T5DecoderLayer(nn.Module):
    layer_type = "t5_decoder"

    def __init__(self, c: T5Config, rel_bias: nn.Embedding) -> None:
        super().__init__()
        self.norm1 = RMSNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.attn = T5Attention(c, causal=True, rel_bias=rel_bias)
        self.norm_cross = RMSNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.cross_attn = T5Attention(c, causal=False, rel_bias=None)
        self.norm2 = RMSNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.mlp = _mlp(c)
        self.dropout = c.dropout

    def forward(self, carry: Carry) -> Carry:
        x, p, t = carry.hidden, self.dropout, self.training
        x = x + dropout(self.attn(self.norm1(x), carry.mask), p, t)
        x = x + dropout(self.cross_attn(self.norm_cross(x), carry.memory_mask, carry.memory), p, t)
        x = x + dropout(self.mlp(self.norm2(x)), p, t)
        return dataclasses.replace(carry, hidden=x)


class T5Embed(nn.Module):
    def __init__(self, c: T5Config) -> None:
        super().__init__()
        self.tok = nn.Embedding(c.vocab_size, c.hidden_size)
        self.start, self.dropout = c.decoder_start_token_id, c.dropout

    def decoder_input_ids(self, batch: dict[str, Tensor]) -> Tensor:
        """``batch['decoder_input_ids']``, or the labels shifted right (as HF does)."""
        dec_ids = batch.get("decoder_input_ids")
        if dec_ids is not None:
            return dec_ids
        if "labels" not in batch:
            raise ValueError("decoder_input_ids: missing (or give labels to shift right)")
        labels = batch["labels"]
        dec_ids = torch.cat([torch.full_like(labels[:, :1], self.start), labels[:, :-1]], 1)
        return dec_ids.masked_fill(dec_ids == -100, 0)

    def forward(self, batch: dict[str, Tensor]) -> Carry:
        dec_ids = self.decoder_input_ids(batch)
        enc = dropout(self.tok(batch["input_ids"]), self.dropout, self.training)
        dec = dropout(self.tok(dec_ids), self.dropout, self.training)
        return Carry(enc, batch.get("attention_mask"), dec, batch.get("decoder_attention_mask"))


class T5Head(nn.Module):
    def __init__(self, c: T5Config) -> None:
        super().__init__()
        self.norm = RMSNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.scale = c.hidden_size ** -0.5 if c.scale_decoder_outputs else None

    def forward(self, carry: Carry) -> Tensor:
        x = self.norm(carry.hidden)
        return self.lm_head(x * self.scale if self.scale is not None else x)


class T5Model(GalvatronModel):
    input_names = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
    memory_inputs = ("decoder_input_ids", "decoder_attention_mask")

    def __init__(self, config: T5Config) -> None:
        super().__init__(config)
        c = config
        self.embed = T5Embed(c)
        enc_bias = nn.Embedding(c.num_buckets, c.num_heads)
        dec_bias = nn.Embedding(c.num_buckets, c.num_heads)
        enc = [T5EncoderLayer(c, enc_bias, last=i == c.num_layers - 1) for i in range(c.num_layers)]
        dec = [T5DecoderLayer(c, dec_bias) for _ in range(c.decoder_layers)]
        self.layers = nn.ModuleList(enc + dec)
        self.head = T5Head(c)
        if c.tie_word_embeddings:
            self.head.lm_head.weight = self.embed.tok.weight
        self.record_ties()

    def memory_ids(self, batch: dict[str, Tensor]) -> Tensor:
        """``decoder_input_ids``, or the labels shifted right."""
        return self.embed.decoder_input_ids(batch)


# ---------------------------------------------------------------------------- spec


def _mlp_saved(c: T5Config) -> list[S.SavedTensor]:
    h, f = c.hidden_size, c.ffn_hidden
    if c.gated_gelu:
        return [S.linear_input_saved("mlp.input", h), S.SavedTensor("mlp.gate", per_token=f),
                S.SavedTensor("mlp.act", per_token=f), S.SavedTensor("mlp.up", per_token=f),
                S.linear_input_saved("mlp.down_proj.input", f, column_parallel=False)]
    # ReLU keeps its output, which is also the input of fc_out: one tensor
    return [S.linear_input_saved("mlp.input", h),
            S.linear_input_saved("mlp.relu_out", f, column_parallel=False)]


def _self_attn_saved(c: T5Config, prefix: str, sdpa: bool) -> list[S.SavedTensor]:
    """Self-attention with the trainable relative bias: SDPA's float32 math fallback on CPU
    (``sdpa``) or our math path, plus the int64 bucket indices the bias lookup keeps."""
    _, math = S.sdpa_saved(prefix, c.num_heads, c.num_heads, c.head_dim, fp32=sdpa)
    return ([S.linear_input_saved(f"{prefix}.input", c.hidden_size)] + math
            + [S.SavedTensor(f"{prefix}.buckets", per_seq_seq=1, elem=S.Elem.INT64,
                             shard=S.Shard.NONE, sp_split=False)])


def t5_spec(c: T5Config) -> S.ModelSpec:
    h, f, v, a, d = c.hidden_size, c.ffn_hidden, c.vocab_size, c.num_heads, c.head_dim
    inner, table = a * d, c.num_buckets * a
    mlp_params = (3 if c.gated_gelu else 2) * h * f
    attn_params = 4 * h * inner
    base = S.norm_saved("norm1", h, True) + _self_attn_saved(c, "attn", sdpa=True)
    base_math = S.norm_saved("norm1", h, True) + _self_attn_saved(c, "attn", sdpa=False)
    post = S.norm_saved("norm2", h, True) + _mlp_saved(c)
    enc_kw = dict(hidden_size=h, num_heads=a, num_kv_heads=a, head_dim=d, ffn_hidden=f,
                  matmul_params=attn_params + mlp_params, attn_ops=1, input_per_token=h)
    final = S.norm_saved("final_norm", h, True)
    # selective: self-attention runs SDPA's math fallback (trainable bias), so only the
    # projections are kept; cross-attention runs the fused kernel
    self_kept = S.attn_kept_selective("attn", h, a, a, d, fused=False)
    mlp_kept = S.mlp_kept_selective("mlp", h, (f, f) if c.gated_gelu else (f,))
    enc_kw["kept_selective"] = tuple(self_kept + mlp_kept)
    enc = S.LayerTypeSpec("t5_encoder", 2 * h + attn_params + mlp_params + table,
                          saved=tuple(base + post), saved_math=tuple(base_math + post), **enc_kw)
    last = S.LayerTypeSpec("t5_encoder_last", 3 * h + attn_params + mlp_params + table,
                           saved=tuple(base + post + final),
                           saved_math=tuple(base_math + post + final), **enc_kw)
    cross_sdpa, cross_math = S.sdpa_saved("cross_attn", a, a, d)
    cross = S.norm_saved("norm_cross", h, True) + [
        S.linear_input_saved("cross_attn.input", h),
        # k/v projections keep the encoder output: the same tensor in every decoder layer
        S.SavedTensor("cross_attn.memory", per_token=h, shard=S.Shard.SEQ, shared=True)]
    mask = [S.SavedTensor("cross_attn.mask", per_token=1, shard=S.Shard.NONE, sp_split=False,
                          padded_only=True)]  # the flash path keeps a float copy
    dec = S.LayerTypeSpec("t5_decoder", 3 * h + 2 * attn_params + mlp_params + table, h, a, a, d,
                          f, matmul_params=2 * attn_params + mlp_params, attn_ops=2,
                          input_per_token=h, saved=tuple(base + cross + cross_sdpa + mask + post),
                          saved_math=tuple(base_math + cross + cross_math + post),
                          kept_selective=tuple(self_kept + mlp_kept + S.attn_kept_selective(
                              "cross_attn", h, a, a, d, fused=True)))
    ids = dict(elem=S.Elem.INT64, shard=S.Shard.NONE)
    embed = S.LayerTypeSpec("t5_embed", v * h, h, saved=(
        S.SavedTensor("input_ids", per_token=1, **ids),
        S.SavedTensor("decoder_input_ids", per_token=1, **ids)))
    head_saved = S.norm_saved("norm", h, True) + [
        S.linear_input_saved("lm_head.input", h),
        *S.loss_saved(v)]
    if not c.scale_decoder_outputs:  # the norm output itself feeds lm_head
        head_saved = [t for t in head_saved if t.name != "lm_head.input"]
    head = S.LayerTypeSpec("t5_head", h + v * h, h, matmul_params=v * h, saved=tuple(head_saved))
    n, nd = c.num_layers, c.decoder_layers
    types = ("t5_encoder",) * (n - 1) + ("t5_encoder_last",) + ("t5_decoder",) * nd
    tied = (n - 1 + nd - 1) * table + (v * h if c.tie_word_embeddings else 0)  # one table per stack
    specs = {"t5_encoder": enc, "t5_encoder_last": last, "t5_decoder": dec}
    specs = {k: v for k, v in specs.items() if k in types}  # a 1-layer encoder has no t5_encoder
    return S.ModelSpec(c.name, c.family, embed, head, specs, types, c.max_seq_len, tied_param_count=tied)


# ---------------------------------------------------------------------------- Hugging Face


def _config_from_hf(hc: Any) -> T5Config:
    if hc.feed_forward_proj not in ("relu", "gated-gelu"):
        raise ValueError(f"feed_forward_proj: {hc.feed_forward_proj!r} is not supported; "
                         "accepted: 'relu', 'gated-gelu'")
    dec = hc.num_decoder_layers
    return T5Config(name=getattr(hc, "name_or_path", "") or "t5-hf", vocab_size=hc.vocab_size,
                    hidden_size=hc.d_model, head_dim=hc.d_kv, num_heads=hc.num_heads,
                    ffn_hidden=hc.d_ff, num_layers=hc.num_layers,
                    num_decoder_layers=None if dec is None or dec == hc.num_layers else dec,
                    gated_gelu=hc.feed_forward_proj == "gated-gelu",
                    num_buckets=hc.relative_attention_num_buckets,
                    max_distance=hc.relative_attention_max_distance,
                    layer_norm_eps=hc.layer_norm_epsilon, dropout=hc.dropout_rate,
                    # transformers 5 always ties and keeps the old flag as "scale outputs";
                    # transformers 4 unties and does not scale when it is False
                    tie_word_embeddings=hc.tie_word_embeddings,
                    scale_decoder_outputs=getattr(hc, "scale_decoder_outputs",
                                                  hc.tie_word_embeddings),
                    decoder_start_token_id=getattr(hc, "decoder_start_token_id", None) or 0)


def _config_to_hf(c: T5Config) -> Any:
    import transformers

    return transformers.T5Config(
        vocab_size=c.vocab_size, d_model=c.hidden_size, d_kv=c.head_dim, num_heads=c.num_heads,
        d_ff=c.ffn_hidden, num_layers=c.num_layers, num_decoder_layers=c.decoder_layers,
        feed_forward_proj="gated-gelu" if c.gated_gelu else "relu",
        relative_attention_num_buckets=c.num_buckets,
        relative_attention_max_distance=c.max_distance, layer_norm_epsilon=c.layer_norm_eps,
        dropout_rate=c.dropout, decoder_start_token_id=c.decoder_start_token_id,
        tie_word_embeddings=c.scale_decoder_outputs,  # transformers 5: "scale"; 4: both
        architectures=["T5ForConditionalGeneration"],
    )


def _block_rules(c: T5Config, o: str, t: str, mlp_sub: int) -> list[Rule]:
    if c.gated_gelu:
        names = (("gate_proj", "wi_0"), ("up_proj", "wi_1"), ("down_proj", "wo"))
    else:
        names = (("fc_in", "wi"), ("fc_out", "wo"))
    m = f"{t}layer.{mlp_sub}."
    r = [same(f"{o}norm1.weight", f"{t}layer.0.layer_norm.weight"),
         same(f"{o}norm2.weight", f"{m}layer_norm.weight")]
    r += [same(f"{o}mlp.{ours}.weight", f"{m}DenseReluDense.{hf}.weight") for ours, hf in names]
    r += [same(f"{o}attn.{p}_proj.weight", f"{t}layer.0.SelfAttention.{p}.weight") for p in "qkvo"]
    return r


def _rules(c: T5Config) -> list[Rule]:
    n = c.num_layers
    r = [same("embed.tok.weight", "shared.weight")]
    for i in range(n):
        r += _block_rules(c, f"layers.{i}.", f"encoder.block.{i}.", 1)
    for i in range(c.decoder_layers):
        j, t = n + i, f"decoder.block.{i}."
        r += _block_rules(c, f"layers.{j}.", t, 2)
        r.append(same(f"layers.{j}.norm_cross.weight", f"{t}layer.1.layer_norm.weight"))
        r += [same(f"layers.{j}.cross_attn.{p}_proj.weight", f"{t}layer.1.EncDecAttention.{p}.weight")
              for p in "qkvo"]
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    r += [same("layers.0.attn.rel_bias.weight", f"encoder.{bias}"),
          same(f"layers.{n}.attn.rel_bias.weight", f"decoder.{bias}"),
          same(f"layers.{n - 1}.final_norm.weight", "encoder.final_layer_norm.weight"),
          same("head.norm.weight", "decoder.final_layer_norm.weight")]
    if not c.tie_word_embeddings:
        r.append(same("head.lm_head.weight", "lm_head.weight"))
    return r


HF = HFAdapter(("T5ForConditionalGeneration",), _config_from_hf, _config_to_hf, _rules,
               ignore=(r"(encoder|decoder)\.embed_tokens\.weight", r"lm_head\.weight"))
FAMILY = Family("t5", T5Config, T5Model, FLAVOURS, t5_spec, HF)
