"""LLaMA (Touvron et al. 2023) and Mistral-style decoders: RMSNorm, RoPE, SwiGLU, GQA.

Carry: ``Carry(hidden [b, s, h], mask [b, s] or None)``, as GPT-2. RoPE positions are
``0..s-1`` and are applied inside ``attn.core`` (so a Ulysses all-to-all around ``core`` sees
the full sequence). ``sliding_window`` (Mistral) limits each query to the last
``sliding_window`` keys. RoPE scaling (``rope_type``: ``linear``, ``dynamic``, ``llama3``; see
:mod:`galvatron.models.rope`) and optional biases on the attention projections
(``attention_bias``: q/k/v and o, as Hugging Face LLaMA; ``o_proj_bias=False`` keeps o
unbiased, as Qwen2) and the MLP (``mlp_bias``). Hugging Face ``LlamaForCausalLM``,
``MistralForCausalLM`` and ``Qwen2ForCausalLM`` (without per-layer sliding windows) map here.
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
    check_divides,
    check_positive,
)
from galvatron.models.hf import HFAdapter, Rule, same
from galvatron.models.layers import (
    Activation,
    Attention,
    GatedMLP,
    LMHead,
    PreNormBlock,
    RMSNorm,
    dropout,
)
from galvatron.models.rope import RopeScaling, RopeType
from galvatron.plan import _enum_value

# ---------------------------------------------------------------------------- model


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
    # RoPE scaling (galvatron.models.rope): "default", "linear", "dynamic" or "llama3"; the
    # original length L of dynamic/llama3 is rope_original_max_seq_len (None: max_seq_len)
    rope_type: RopeType = RopeType.DEFAULT
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int | None = None
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # biases on q/k/v and o
    o_proj_bias: bool | None = None  # o's bias alone (None: attention_bias; Qwen2: False)
    mlp_bias: bool = False  # biases on gate/up/down

    def validate(self) -> None:
        super().validate()
        object.__setattr__(self, "rope_type", _enum_value(RopeType, self.rope_type, "rope_type"))
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
        if self.rope_original_max_seq_len is not None:
            check_positive(self, "rope_original_max_seq_len")
        if self.rope_scaling.rope_type is RopeType.DYNAMIC and self.dim <= 2:
            raise ValueError(f"head_dim must be > 2 for rope_type 'dynamic', got {self.dim}")
        for flag in ("attention_bias", "mlp_bias", "o_proj_bias"):
            value = getattr(self, flag)
            if not isinstance(value, bool) and not (flag == "o_proj_bias" and value is None):
                raise ValueError(f"{flag} must be true or false, got {value!r}")

    @property
    def o_bias(self) -> bool:
        """Whether o_proj has a bias."""
        return self.attention_bias if self.o_proj_bias is None else self.o_proj_bias

    @property
    def rope_scaling(self) -> RopeScaling:
        """The RoPE scaling of every layer (validated)."""
        return RopeScaling(self.rope_type, self.rope_factor, self.rope_low_freq_factor,
                           self.rope_high_freq_factor,
                           self.rope_original_max_seq_len or self.max_seq_len)

    @property
    def dim(self) -> int:
        """Per-head dimension (``head_dim`` or ``hidden_size // num_heads``)."""
        return self.head_dim or self.hidden_size // self.num_heads


def _flavour(name: str, h: int, layers: int, heads: int, kv: int, ffn: int, **kw: Any) -> LlamaConfig:
    base: dict[str, Any] = dict(vocab_size=32000, max_seq_len=4096, rms_norm_eps=1e-5)
    base.update(kw)
    return LlamaConfig(name=name, hidden_size=h, num_layers=layers, num_heads=heads,
                       num_kv_heads=kv, ffn_hidden=ffn, **base)


_LLAMA31: dict[str, Any] = dict(
    vocab_size=128256, max_seq_len=131072, rope_theta=500000.0, rope_type=RopeType.LLAMA3,
    rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
    rope_original_max_seq_len=8192)

FLAVOURS = {
    "llama-debug": LlamaConfig(),
    "llama2-7b": _flavour("llama2-7b", 4096, 32, 32, 32, 11008),
    "llama2-13b": _flavour("llama2-13b", 5120, 40, 40, 40, 13824),
    "llama2-70b": _flavour("llama2-70b", 8192, 80, 64, 8, 28672),
    "llama3-8b": _flavour("llama3-8b", 4096, 32, 32, 8, 14336, vocab_size=128256,
                          max_seq_len=8192, rope_theta=500000.0),
    # Llama 3.1 (Meta 2024): 128K context through llama3 RoPE scaling of the 8K pretraining
    # context; 8,030,261,248 and 70,553,706,496 parameters
    "llama3.1-8b": _flavour("llama3.1-8b", 4096, 32, 32, 8, 14336, **_LLAMA31),
    "llama3.1-70b": _flavour("llama3.1-70b", 8192, 80, 64, 8, 28672, **_LLAMA31),
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
                Attention(c.hidden_size, c.num_heads, c.num_kv_heads, c.dim,
                          bias=c.attention_bias, causal=True, backend=c.attn_backend,
                          rope_theta=c.rope_theta, sliding_window=c.sliding_window,
                          rope_scaling=c.rope_scaling, out_bias=c.o_bias),
                RMSNorm(c.hidden_size, eps=c.rms_norm_eps),
                GatedMLP(c.hidden_size, c.ffn_hidden, Activation.SILU, bias=c.mlp_bias),
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
    biases = ((qo + 2 * kv if c.attention_bias else 0) + (h if c.o_bias else 0)
              + (2 * f + h if c.mlp_bias else 0))
    ffn = [S.linear_input_saved("mlp.input", h, readers=2),
           S.SavedTensor("mlp.gate", per_token=f), S.SavedTensor("mlp.act", per_token=f),
           S.SavedTensor("mlp.up", per_token=f),
           S.linear_input_saved("mlp.down_proj.input", f, column_parallel=False)]
    # the sliding-window mask is built (and kept by SDPA) even without padding
    layer = S.prenorm_layer_spec("llama", c, ffn, 2 * h + matmul + biases, matmul, rms=True, rope=True,
                               kv_heads=c.num_kv_heads, head_dim=d, ffn_columns=(f, f),
                               mask_always=c.sliding_window is not None)
    embed = S.LayerTypeSpec("llama_embed", v * h, h, saved=(
        S.SavedTensor("input_ids", per_token=1, elem=S.Elem.INT64, shard=S.Shard.NONE),))
    head = S.lm_head_spec("llama_head", h, v, h + v * h, rms=True)
    return S.ModelSpec(c.name, c.family, embed, head, {"llama": layer},
                       ("llama",) * c.num_layers, c.max_seq_len,
                       tied_param_count=v * h if c.tie_word_embeddings else 0)


# ---------------------------------------------------------------------------- Hugging Face


_ROPE_KEYS = {  # our field <- Hugging Face rope_parameters key, per rope type
    RopeType.DEFAULT: {},
    RopeType.LINEAR: {"rope_factor": "factor"},
    RopeType.DYNAMIC: {"rope_factor": "factor"},
    RopeType.LLAMA3: {"rope_factor": "factor", "rope_low_freq_factor": "low_freq_factor",
                      "rope_high_freq_factor": "high_freq_factor",
                      "rope_original_max_seq_len": "original_max_position_embeddings"},
}


def _rope_from_hf(hc: Any) -> dict[str, Any]:
    """Our rope fields from ``rope_parameters`` (transformers 5) or ``rope_scaling`` +
    ``rope_theta`` (transformers 4)."""
    params = {**(getattr(hc, "rope_scaling", None) or {}),
              **(getattr(hc, "rope_parameters", None) or {})}
    name = params.get("rope_type", params.get("type", "default"))
    try:
        rope_type = RopeType(name)
    except ValueError:
        raise ValueError(f"rope_type: {name!r} is not supported; accepted: "
                         f"{[t.value for t in RopeType]}") from None
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor: {params['partial_rotary_factor']!r} is not "
                         "supported; accepted: 1.0")
    theta = params.get("rope_theta", getattr(hc, "rope_theta", None))
    out: dict[str, Any] = {"rope_type": rope_type,
                           "rope_theta": float(theta if theta is not None else 10000.0)}
    for ours, key in _ROPE_KEYS[rope_type].items():
        if key == "original_max_position_embeddings":
            value = params.get(key, getattr(hc, key, None)) or hc.max_position_embeddings
        elif key not in params:
            raise ValueError(f"rope_parameters: {key!r} is required for rope_type {name!r}")
        else:
            value = params[key]
        out[ours] = value
    if rope_type is RopeType.DYNAMIC:  # transformers grows the base past max_position_embeddings
        out["rope_original_max_seq_len"] = hc.max_position_embeddings
    return out


def _rope_to_hf(c: LlamaConfig) -> dict[str, Any]:
    r = c.rope_scaling
    if r.rope_type is RopeType.DYNAMIC and r.original_max_seq_len != c.max_seq_len:
        raise ValueError(f"rope_original_max_seq_len={r.original_max_seq_len} with rope_type "
                         f"'dynamic' cannot be exported: transformers scales past "
                         f"max_position_embeddings (max_seq_len={c.max_seq_len}); set it to None")
    out: dict[str, Any] = {"rope_type": r.rope_type.value}
    for ours, key in _ROPE_KEYS[r.rope_type].items():
        out[key] = getattr(r, ours.removeprefix("rope_"))  # RopeScaling's field of the same name
    return out


def _sliding_window_from_hf(hc: Any) -> int | None:
    """Mistral: ``sliding_window`` on every layer. Qwen2: only layers whose ``layer_types`` entry
    is ``sliding_attention`` use it; all or none are supported."""
    if hc.model_type != "qwen2":
        return getattr(hc, "sliding_window", None)
    kinds = set(getattr(hc, "layer_types", None) or ["full_attention"])
    if kinds == {"full_attention"}:
        return None
    if kinds == {"sliding_attention"}:
        return hc.sliding_window
    raise ValueError(f"layer_types: {sorted(kinds)} mixes sliding and full attention layers; "
                     "accepted: one kind for every layer (use_sliding_window with "
                     "max_window_layers 0, or no sliding window)")


def _config_from_hf(hc: Any) -> LlamaConfig:
    if hc.hidden_act != "silu":
        raise ValueError(f"hidden_act: {hc.hidden_act!r} is not supported; accepted: 'silu'")
    qwen2 = hc.model_type == "qwen2"  # q/k/v biased, o and the MLP not
    return LlamaConfig(
        name=getattr(hc, "name_or_path", "") or f"{hc.model_type}-hf",
        vocab_size=hc.vocab_size, max_seq_len=hc.max_position_embeddings,
        hidden_size=hc.hidden_size, num_layers=hc.num_hidden_layers,
        num_heads=hc.num_attention_heads,
        num_kv_heads=hc.num_key_value_heads or hc.num_attention_heads,
        head_dim=getattr(hc, "head_dim", None), ffn_hidden=hc.intermediate_size,
        rms_norm_eps=hc.rms_norm_eps, sliding_window=_sliding_window_from_hf(hc),
        tie_word_embeddings=hc.tie_word_embeddings,
        attention_bias=qwen2 or bool(getattr(hc, "attention_bias", False)),
        o_proj_bias=False if qwen2 else None,
        mlp_bias=bool(getattr(hc, "mlp_bias", False)), **_rope_from_hf(hc),
    )


def _config_to_hf(c: LlamaConfig) -> Any:
    import transformers

    kw = dict(vocab_size=c.vocab_size, max_position_embeddings=c.max_seq_len,
              hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
              num_attention_heads=c.num_heads, num_key_value_heads=c.num_kv_heads,
              head_dim=c.dim, intermediate_size=c.ffn_hidden, rms_norm_eps=c.rms_norm_eps,
              rope_theta=c.rope_theta, rope_scaling=_rope_to_hf(c),
              tie_word_embeddings=c.tie_word_embeddings,
              bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if c.attention_bias and not c.o_bias and not c.mlp_bias:  # Qwen2
        window = {} if c.sliding_window is None else dict(
            use_sliding_window=True, sliding_window=c.sliding_window, max_window_layers=0)
        return transformers.Qwen2Config(architectures=["Qwen2ForCausalLM"], **window, **kw)
    if c.attention_bias != c.o_bias:
        raise ValueError(f"attention_bias={c.attention_bias} with o_proj_bias={c.o_bias} cannot "
                         "be exported: transformers' LLaMA biases q/k/v and o together, Qwen2 "
                         "q/k/v only (and no MLP)")
    if c.sliding_window is not None:
        if c.attention_bias or c.mlp_bias:
            raise ValueError("attention_bias / mlp_bias with sliding_window cannot be exported: "
                             "transformers' MistralForCausalLM has no biases")
        return transformers.MistralConfig(sliding_window=c.sliding_window,
                                          architectures=["MistralForCausalLM"], **kw)
    return transformers.LlamaConfig(architectures=["LlamaForCausalLM"], attention_bias=c.attention_bias,
                                    mlp_bias=c.mlp_bias, **kw)


def _rules(c: LlamaConfig) -> list[Rule]:
    r = [same("embed.tok.weight", "model.embed_tokens.weight")]
    for i in range(c.num_layers):
        o, t = f"layers.{i}.", f"model.layers.{i}."
        r += [same(f"{o}norm1.weight", f"{t}input_layernorm.weight"),
              same(f"{o}norm2.weight", f"{t}post_attention_layernorm.weight")]
        for p in "qkvo":
            biased = c.o_bias if p == "o" else c.attention_bias
            r += [same(f"{o}attn.{p}_proj.{w}", f"{t}self_attn.{p}_proj.{w}")
                  for w in (("weight", "bias") if biased else ("weight",))]
        leaves = ("weight", "bias") if c.mlp_bias else ("weight",)
        r += [same(f"{o}mlp.{p}_proj.{w}", f"{t}mlp.{p}_proj.{w}")
              for p in ("gate", "up", "down") for w in leaves]
    r.append(same("head.norm.weight", "model.norm.weight"))
    if not c.tie_word_embeddings:
        r.append(same("head.lm_head.weight", "lm_head.weight"))
    return r


HF = HFAdapter(("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"), _config_from_hf, _config_to_hf,
               _rules, ignore=(r"lm_head\.weight", r".*rotary_emb\.inv_freq"))
FAMILY = Family("llama", LlamaConfig, LlamaModel, FLAVOURS, llama_spec, HF)
