"""LLaMA (Touvron et al. 2023) and Mistral-style decoders: RMSNorm, RoPE, SwiGLU, GQA.

Carry: ``Carry(hidden [b, s, h], mask [b, s] or None)``, as GPT-2. RoPE positions are
``0..s-1`` and are applied inside ``attn.core`` (so a Ulysses all-to-all around ``core`` sees
the full sequence). ``sliding_window`` (Mistral) limits each query to the last
``sliding_window`` keys. Not supported: RoPE scaling (LLaMA-3.1 ``rope_scaling``), biases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from galvatron.models import spec as S
from galvatron.models.base import (
    Carry,
    Family,
    GalvatronModel,
    ModelConfig,
    PreNormBlock,
    check_divides,
    check_positive,
)
from galvatron.models.gpt2 import LMHead, lm_head_spec, prenorm_layer_spec
from galvatron.models.hf import HFAdapter, Rule, same
from galvatron.models.layers import Activation, Attention, GatedMLP, RMSNorm, dropout


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    family = "llama"
    name: str = "llama-debug"
    vocab_size: int = 512
    max_seq_len: int = 128
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int | None = None  # None: hidden_size // num_heads
    ffn_hidden: int = 176
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    sliding_window: int | None = None
    tie_word_embeddings: bool = False

    def validate(self) -> None:
        super().validate()
        check_positive(self, "vocab_size", "max_seq_len", "hidden_size", "num_layers",
                       "num_heads", "num_kv_heads", "ffn_hidden")
        if self.head_dim is None:
            check_divides(self, "num_heads", "hidden_size")
        else:
            check_positive(self, "head_dim")
        if self.dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.dim}")
        check_divides(self, "num_kv_heads", "num_heads")
        if self.sliding_window is not None:
            check_positive(self, "sliding_window")

    @property
    def dim(self) -> int:
        """Per-head dimension (``head_dim`` or ``hidden_size // num_heads``)."""
        return self.head_dim or self.hidden_size // self.num_heads


def _flavour(name: str, h: int, layers: int, heads: int, kv: int, ffn: int, **kw: Any) -> LlamaConfig:
    base: dict[str, Any] = dict(vocab_size=32000, max_seq_len=4096, rms_norm_eps=1e-5)
    base.update(kw)
    return LlamaConfig(name=name, hidden_size=h, num_layers=layers, num_heads=heads,
                       num_kv_heads=kv, ffn_hidden=ffn, **base)


FLAVOURS = {
    "llama-debug": LlamaConfig(),
    "llama2-7b": _flavour("llama2-7b", 4096, 32, 32, 32, 11008),
    "llama2-13b": _flavour("llama2-13b", 5120, 40, 40, 40, 13824),
    "llama2-70b": _flavour("llama2-70b", 8192, 80, 64, 8, 28672),
    "llama3-8b": _flavour("llama3-8b", 4096, 32, 32, 8, 14336, vocab_size=128256,
                          max_seq_len=8192, rope_theta=500000.0),
    "mistral-7b": _flavour("mistral-7b", 4096, 32, 32, 8, 14336, max_seq_len=32768,
                           sliding_window=4096),
}


class LlamaEmbed(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.tok = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.dropout = cfg.dropout

    def forward(self, batch: dict[str, Tensor]) -> Carry:
        x = dropout(self.tok(batch["input_ids"]), self.dropout, self.training)
        return Carry(x, batch.get("attention_mask"))


class LlamaModel(GalvatronModel):
    input_names = ("input_ids", "attention_mask")
    shift_labels = True

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        c = config
        self.embed = LlamaEmbed(c)
        self.layers = nn.ModuleList(
            PreNormBlock(
                "llama",
                RMSNorm(c.hidden_size, eps=c.rms_norm_eps),
                Attention(c.hidden_size, c.num_heads, c.num_kv_heads, c.dim, bias=False,
                          causal=True, backend=c.attn_backend, rope_theta=c.rope_theta,
                          sliding_window=c.sliding_window),
                RMSNorm(c.hidden_size, eps=c.rms_norm_eps),
                GatedMLP(c.hidden_size, c.ffn_hidden, Activation.SILU),
                c.dropout,
            )
            for _ in range(c.num_layers)
        )
        self.head = LMHead(RMSNorm(c.hidden_size, eps=c.rms_norm_eps), c.hidden_size,
                           c.vocab_size)
        if c.tie_word_embeddings:
            self.head.lm_head.weight = self.embed.tok.weight
        self.record_ties()


# ---------------------------------------------------------------------------- spec


def llama_spec(c: LlamaConfig) -> S.ModelSpec:
    h, f, v, d = c.hidden_size, c.ffn_hidden, c.vocab_size, c.dim
    qo, kv = c.num_heads * d, c.num_kv_heads * d
    matmul = 2 * h * qo + 2 * h * kv + 3 * h * f
    ffn = [S.linear_input_saved("mlp.input", h),
           S.SavedTensor("mlp.gate", per_token=f), S.SavedTensor("mlp.act", per_token=f),
           S.SavedTensor("mlp.up", per_token=f),
           S.linear_input_saved("mlp.down_proj.input", f, column_parallel=False)]
    # the sliding-window mask is built (and kept by SDPA) even without padding
    layer = prenorm_layer_spec("llama", c, ffn, 2 * h + matmul, matmul, rms=True, rope=True,
                               kv_heads=c.num_kv_heads, head_dim=d, ffn_columns=(f, f),
                               mask_always=c.sliding_window is not None)
    embed = S.LayerTypeSpec("llama_embed", v * h, h, saved=(
        S.SavedTensor("input_ids", per_token=1, elem=S.Elem.INT64, shard=S.Shard.NONE),))
    head = lm_head_spec("llama_head", h, v, h + v * h, rms=True)
    return S.ModelSpec(c.name, c.family, embed, head, {"llama": layer},
                       ("llama",) * c.num_layers, c.max_seq_len,
                       tied_param_count=v * h if c.tie_word_embeddings else 0)


# ---------------------------------------------------------------------------- Hugging Face


def _rope_theta(hc: Any) -> float:
    params = getattr(hc, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    scaling = getattr(hc, "rope_scaling", None)
    if rope_type != "default" or (scaling and scaling.get("rope_type", "default") != "default"):
        raise ValueError(f"rope_type: {rope_type!r} is not supported; accepted: 'default'")
    theta = params.get("rope_theta", getattr(hc, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)


def _config_from_hf(hc: Any) -> LlamaConfig:
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hc, flag, False):
            raise ValueError(f"{flag}: True is not supported; accepted: False")
    if hc.hidden_act != "silu":
        raise ValueError(f"hidden_act: {hc.hidden_act!r} is not supported; accepted: 'silu'")
    return LlamaConfig(
        name=getattr(hc, "name_or_path", "") or f"{hc.model_type}-hf",
        vocab_size=hc.vocab_size, max_seq_len=hc.max_position_embeddings,
        hidden_size=hc.hidden_size, num_layers=hc.num_hidden_layers,
        num_heads=hc.num_attention_heads,
        num_kv_heads=hc.num_key_value_heads or hc.num_attention_heads,
        head_dim=getattr(hc, "head_dim", None), ffn_hidden=hc.intermediate_size,
        rms_norm_eps=hc.rms_norm_eps, rope_theta=_rope_theta(hc),
        sliding_window=getattr(hc, "sliding_window", None),
        tie_word_embeddings=hc.tie_word_embeddings,
    )


def _config_to_hf(c: LlamaConfig) -> Any:
    import transformers

    kw = dict(vocab_size=c.vocab_size, max_position_embeddings=c.max_seq_len,
              hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
              num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
              head_dim=c.dim, intermediate_size=c.ffn_hidden, rms_norm_eps=c.rms_norm_eps,
              rope_theta=c.rope_theta, tie_word_embeddings=c.tie_word_embeddings,
              bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if c.sliding_window is not None:
        return transformers.MistralConfig(sliding_window=c.sliding_window,
                                          architectures=["MistralForCausalLM"], **kw)
    return transformers.LlamaConfig(architectures=["LlamaForCausalLM"], **kw)


def _rules(c: LlamaConfig) -> list[Rule]:
    r = [same("embed.tok.weight", "model.embed_tokens.weight")]
    for i in range(c.num_layers):
        o, t = f"layers.{i}.", f"model.layers.{i}."
        r += [same(f"{o}norm1.weight", f"{t}input_layernorm.weight"),
              same(f"{o}norm2.weight", f"{t}post_attention_layernorm.weight")]
        r += [same(f"{o}attn.{p}_proj.weight", f"{t}self_attn.{p}_proj.weight") for p in "qkvo"]
        r += [same(f"{o}mlp.{p}_proj.weight", f"{t}mlp.{p}_proj.weight")
              for p in ("gate", "up", "down")]
    r.append(same("head.norm.weight", "model.norm.weight"))
    if not c.tie_word_embeddings:
        r.append(same("head.lm_head.weight", "lm_head.weight"))
    return r


HF = HFAdapter(("LlamaForCausalLM", "MistralForCausalLM"), _config_from_hf, _config_to_hf,
               _rules, ignore=(r"lm_head\.weight", r".*rotary_emb\.inv_freq"))
FAMILY = Family("llama", LlamaConfig, LlamaModel, FLAVOURS, llama_spec, HF)
