"""ViT (Dosovitskiy et al. 2021): patch embedding + [CLS] + learned positions, pre-LN encoder,
classification from the [CLS] token.

Carry: ``Carry(hidden [b, 1 + num_patches, h])``, no mask. Input ``pixel_values``
``[b, channels, image_size, image_size]`` (the configured size only: no position
interpolation). The head normalises the [CLS] token (LayerNorm is per token, so this equals
normalising all tokens first, as Hugging Face does) and classifies it.
"""

from __future__ import annotations

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
from galvatron.models.layers import MLP, Activation, Attention, PreNormBlock, dropout, patchify

# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ViTConfig(ModelConfig):
    family = "vit"
    name: str = "vit-debug"
    image_size: int = 32
    patch_size: int = 8
    num_channels: int = 3
    num_labels: int = 10
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    ffn_hidden: int = 128
    layer_norm_eps: float = 1e-12

    def validate(self) -> None:
        super().validate()
        check_positive(self, "image_size", "patch_size", "num_channels", "num_labels",
                       "hidden_size", "num_layers", "num_heads", "ffn_hidden")
        check_divides(self, "patch_size", "image_size")
        check_divides(self, "num_heads", "hidden_size")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def _flavour(name: str, h: int, layers: int, heads: int, patch: int = 16) -> ViTConfig:
    return ViTConfig(name=name, image_size=224, patch_size=patch, num_labels=1000, hidden_size=h,
                     num_layers=layers, num_heads=heads, ffn_hidden=4 * h)


FLAVOURS = {
    "vit-debug": ViTConfig(),
    "vit-base": _flavour("vit-base", 768, 12, 12),
    "vit-large": _flavour("vit-large", 1024, 24, 16),
    "vit-huge": _flavour("vit-huge", 1280, 32, 16, patch=14),
}


class ViTEmbed(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        self.patch = nn.Conv2d(c.num_channels, c.hidden_size, c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.position = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.hidden_size))
        self.image_size = c.image_size
        self.dropout = c.dropout

    def forward(self, batch: dict[str, Tensor]) -> Carry:
        x = patchify(self.patch, batch["pixel_values"], self.image_size)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        return Carry(dropout(x, self.dropout, self.training))


class ClsHead(nn.Module):
    def __init__(self, c: ViTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.classifier = nn.Linear(c.hidden_size, c.num_labels)

    def forward(self, carry: Carry) -> Tensor:
        return self.classifier(self.norm(carry.hidden[:, 0]))


class ViTModel(GalvatronModel):
    input_names = ("pixel_values",)

    def __init__(self, config: ViTConfig) -> None:
        super().__init__(config)
        c = config
        self.embed = ViTEmbed(c)
        self.layers = nn.ModuleList(
            PreNormBlock(
                "vit",
                nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps),
                Attention(c.hidden_size, c.num_heads, backend=c.attn_backend),
                nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps),
                MLP(c.hidden_size, c.ffn_hidden, Activation.GELU),
                c.dropout,
            )
            for _ in range(c.num_layers)
        )
        self.head = ClsHead(c)
        self.record_ties()

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Cross-entropy of the class logits ``[b, num_labels]`` against ``labels`` ``[b]``."""
        return F.cross_entropy(logits.float(), batch["labels"])


# ---------------------------------------------------------------------------- spec


def vit_spec(c: ViTConfig) -> S.ModelSpec:
    h, f, a, p = c.hidden_size, c.ffn_hidden, c.num_heads, c.patch_size
    matmul = 4 * h * h + 2 * h * f
    layer = S.prenorm_layer_spec("vit", c, S.gelu_mlp_saved(h, f), 4 * h + matmul + 4 * h + f + h,
                               matmul, rms=False, rope=False, kv_heads=a, head_dim=c.head_dim,
                               padding=False)
    patch_params = c.num_channels * p * p * h
    embed = S.LayerTypeSpec(
        "vit_embed", patch_params + 2 * h + (c.num_patches + 1) * h, h,
        matmul_params=patch_params,
        saved=(S.SavedTensor("pixel_values", per_sample=c.num_channels * c.image_size ** 2,
                             shard=S.Shard.NONE),))
    head = S.LayerTypeSpec("vit_head", 2 * h + h * c.num_labels + c.num_labels, h,
                           saved=S.cls_head_saved(h, c.num_labels))
    return S.ModelSpec(c.name, c.family, embed, head, {"vit": layer}, ("vit",) * c.num_layers,
                       c.num_patches + 1)


# ---------------------------------------------------------------------------- Hugging Face


def _config_from_hf(hc: Any) -> ViTConfig:
    if hc.hidden_act != "gelu" or not hc.qkv_bias:
        raise ValueError("hidden_act/qkv_bias: only 'gelu' with qkv_bias=True is supported")
    return ViTConfig(name=getattr(hc, "name_or_path", "") or "vit-hf", image_size=hc.image_size,
                     patch_size=hc.patch_size, num_channels=hc.num_channels,
                     num_labels=hc.num_labels, hidden_size=hc.hidden_size,
                     num_layers=hc.num_hidden_layers, num_heads=hc.num_attention_heads,
                     ffn_hidden=hc.intermediate_size, layer_norm_eps=hc.layer_norm_eps,
                     dropout=hc.hidden_dropout_prob)


def _config_to_hf(c: ViTConfig) -> Any:
    import transformers

    return transformers.ViTConfig(
        image_size=c.image_size, patch_size=c.patch_size, num_channels=c.num_channels,
        num_labels=c.num_labels, hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, intermediate_size=c.ffn_hidden,
        layer_norm_eps=c.layer_norm_eps, hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=0.0, architectures=["ViTForImageClassification"],
    )


def _rules(c: ViTConfig) -> list[Rule]:
    e = "vit.embeddings."
    r = [same("embed.cls_token", f"{e}cls_token"), same("embed.position", f"{e}position_embeddings"),
         *weight_bias("embed.patch", f"{e}patch_embeddings.projection")]
    for i in range(c.num_layers):
        o, t = f"layers.{i}.", f"vit.layers.{i}."
        r += [*weight_bias(f"{o}norm1", f"{t}layernorm_before"), *weight_bias(f"{o}norm2", f"{t}layernorm_after"),
              *weight_bias(f"{o}mlp.fc_in", f"{t}mlp.fc1"), *weight_bias(f"{o}mlp.fc_out", f"{t}mlp.fc2")]
        for p in "qkvo":
            r += weight_bias(f"{o}attn.{p}_proj", f"{t}attention.{p}_proj")
    return r + [*weight_bias("head.norm", "vit.layernorm"), *weight_bias("head.classifier", "classifier")]


_DISK = (
    (r"^vit\.layers\.(\d+)\.", r"vit.encoder.layer.\1."),
    (r"attention\.q_proj", "attention.attention.query"),
    (r"attention\.k_proj", "attention.attention.key"),
    (r"attention\.v_proj", "attention.attention.value"),
    (r"attention\.o_proj", "attention.output.dense"),
    (r"mlp\.fc1", "intermediate.dense"),
    (r"mlp\.fc2", "output.dense"),
)
HF = HFAdapter(("ViTForImageClassification",), _config_from_hf, _config_to_hf, _rules,
               disk_renames=_DISK)
FAMILY = Family("vit", ViTConfig, ViTModel, FLAVOURS, vit_spec, HF)
