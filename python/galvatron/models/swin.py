"""Swin Transformer (Liu et al. 2021): window attention, shifted windows, patch merging.

Carry: ``Carry(hidden [b, H*W, C])``, no mask; ``H = W = image_size / patch_size / 2**stage``
and ``C = embed_dim * 2**stage`` change at patch merging. Layers, in order: the blocks of stage
0, then for each later stage ``i`` one patch-merging layer (type ``swin_merge{i}``:
``[b, 4N, C] -> [b, N, 2C]``, its own layer type) followed by the blocks of stage ``i``. Odd
blocks shift their windows by ``window_size // 2`` (none where the stage resolution equals the
window); all blocks of stage ``i`` have type ``swin_stage{i}`` (shifted and plain blocks have
the same parameters, FLOPs and saved activations). Fixed image size: each layer knows its
resolution from the config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galvatron.models import spec as S
from galvatron.models.base import Carry, Family, GalvatronModel, ModelConfig, check_positive
from galvatron.models.hf import HFAdapter, Rule, same, weight_bias
from galvatron.models.layers import MLP, Activation, Attention, attention, dropout, patchify

# ---------------------------------------------------------------------------- model


@dataclass(frozen=True)
class SwinConfig(ModelConfig):
    family = "swin"
    name: str = "swin-debug"
    image_size: int = 32
    patch_size: int = 2
    num_channels: int = 3
    num_labels: int = 10
    embed_dim: int = 16
    depths: tuple[int, ...] = (2, 2, 2)
    num_heads: tuple[int, ...] = (2, 2, 4)
    window_size: int = 4
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-5

    def validate(self) -> None:
        super().validate()
        check_positive(self, "image_size", "patch_size", "num_channels", "num_labels",
                       "embed_dim", "window_size")
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        if not self.depths or len(self.num_heads) != len(self.depths):
            raise ValueError(f"num_heads must have one entry per stage (len(depths)="
                             f"{len(self.depths)}), got {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size={self.patch_size} must divide image_size={self.image_size}")
        for i in range(len(self.depths)):
            res, dim = self.resolution(i), self.dim(i)
            if dim % self.num_heads[i]:
                raise ValueError(f"num_heads[{i}]={self.num_heads[i]} must divide the stage width {dim}")
            if res < self.window_size or res % self.window_size:
                raise ValueError(f"window_size={self.window_size} must divide the resolution {res} "
                                 f"of stage {i} (and not exceed it)")
            if i + 1 < len(self.depths) and res % 2:
                raise ValueError(f"stage {i} resolution {res} must be even for patch merging")

    def resolution(self, stage: int) -> int:
        return self.image_size // self.patch_size // 2 ** stage

    def dim(self, stage: int) -> int:
        return self.embed_dim * 2 ** stage

    def shift(self, stage: int, block: int) -> int:
        return 0 if block % 2 == 0 or self.resolution(stage) <= self.window_size else self.window_size // 2

    @property
    def hidden_size(self) -> int:
        return self.dim(len(self.depths) - 1)


def _flavour(name: str, dim: int, depths: tuple[int, ...], heads: tuple[int, ...]) -> SwinConfig:
    return SwinConfig(name=name, image_size=224, patch_size=4, num_labels=1000, embed_dim=dim,
                      depths=depths, num_heads=heads, window_size=7)


FLAVOURS = {
    "swin-debug": SwinConfig(),
    "swin-tiny": _flavour("swin-tiny", 96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin-small": _flavour("swin-small", 96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin-base": _flavour("swin-base", 128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "swin-large": _flavour("swin-large", 192, (2, 2, 18, 2), (6, 12, 24, 48)),
}


def _partition(x: Tensor, ws: int) -> Tensor:
    """``[b, H, W, C]`` -> ``[b * nW, ws*ws, C]`` (windows in row-major order)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(-1, ws * ws, c)


def _reverse(windows: Tensor, ws: int, res: int) -> Tensor:
    c = windows.shape[-1]
    x = windows.view(-1, res // ws, res // ws, ws, ws, c).transpose(2, 3)
    return x.reshape(-1, res, res, c)


def _relative_index(ws: int, device: torch.device | None) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws, device=device),
                                        torch.arange(ws, device=device), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return (rel[..., 0] * (2 * ws - 1) + rel[..., 1]).flatten()


def _shift_mask(res: int, ws: int, shift: int, device: torch.device | None, dtype) -> Tensor:
    """``[nW, N, N]``: 0 within a region of the rolled image, -100 across regions (as HF)."""
    idx = torch.arange(res, device=device)
    region = (idx >= res - ws).long() + (idx >= res - shift).long()
    img = (region[None, :, None, None] * 3 + region[None, None, :, None]).to(dtype)
    win = _partition(img, ws).squeeze(-1)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(Attention):
    """Attention inside ``window x window`` patches with a learned relative position bias.

    ``core`` takes ``[b * nW, N, heads, d]``; it adds the bias (and the shifted-window mask)
    for its local heads ``head_start .. head_start + heads`` of ``rel_bias``; its ``mask``
    argument is unused (Swin has no padding).
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, res: int, backend) -> None:
        super().__init__(dim, heads, bias=True, backend=backend)
        self.rel_bias = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.window, self.shift, self.res = window, shift, res
        self.head_start = 0

    def core(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        n, heads = q.shape[1], q.shape[2]
        table = self.rel_bias[:, self.head_start:self.head_start + heads]
        bias = table[_relative_index(self.window, q.device)].view(n, n, heads)
        bias = bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        if self.shift:
            shift = _shift_mask(self.res, self.window, self.shift, q.device, q.dtype)
            num_windows = shift.shape[0]
            shift = shift.unsqueeze(1).expand(q.shape[0] // num_windows, -1, -1, -1, -1)
            bias = bias + shift.reshape(-1, 1, n, n)
        return attention(q, k, v, bias, False, self.backend)


class SwinBlock(nn.Module):
    def __init__(self, c: SwinConfig, stage: int, block: int) -> None:
        super().__init__()
        dim, self.res = c.dim(stage), c.resolution(stage)
        self.window, self.shift = c.window_size, c.shift(stage, block)
        self.layer_type = f"swin_stage{stage}"
        self.norm1 = nn.LayerNorm(dim, eps=c.layer_norm_eps)
        self.attn = WindowAttention(dim, c.num_heads[stage], self.window, self.shift, self.res,
                                    c.attn_backend)
        self.norm2 = nn.LayerNorm(dim, eps=c.layer_norm_eps)
        self.mlp = MLP(dim, int(c.mlp_ratio * dim), Activation.GELU)
        self.dropout = c.dropout

    def forward(self, carry: Carry) -> Carry:
        x = carry.hidden
        b, n, ch = x.shape
        h = self.norm1(x).view(b, self.res, self.res, ch)
        if self.shift:
            h = torch.roll(h, (-self.shift, -self.shift), dims=(1, 2))
        a = _reverse(self.attn(_partition(h, self.window)), self.window, self.res)
        if self.shift:
            a = torch.roll(a, (self.shift, self.shift), dims=(1, 2))
        x = x + dropout(a.reshape(b, n, ch), self.dropout, self.training)
        x = x + dropout(self.mlp(self.norm2(x)), self.dropout, self.training)
        return dataclasses.replace(carry, hidden=x)


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (``[b, H, W, C] -> [b, H/2 * W/2, 4C]``), normed,
    reduced to ``2C``."""

    def __init__(self, c: SwinConfig, stage: int) -> None:
        super().__init__()
        self.layer_type = f"swin_merge{stage}"
        self.res, dim = c.resolution(stage - 1), c.dim(stage - 1)
        self.norm = nn.LayerNorm(4 * dim, eps=c.layer_norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, carry: Carry) -> Carry:
        x = carry.hidden
        b, _, ch = x.shape
        x = x.view(b, self.res, self.res, ch)
        x = torch.cat([x[:, r::2, col::2] for col in range(2) for r in range(2)], dim=-1)
        return dataclasses.replace(carry, hidden=self.reduction(self.norm(x.view(b, -1, 4 * ch))))


class SwinEmbed(nn.Module):
    def __init__(self, c: SwinConfig) -> None:
        super().__init__()
        self.patch = nn.Conv2d(c.num_channels, c.embed_dim, c.patch_size, stride=c.patch_size)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.layer_norm_eps)
        self.image_size, self.dropout = c.image_size, c.dropout

    def forward(self, batch: dict[str, Tensor]) -> Carry:
        x = patchify(self.patch, batch["pixel_values"], self.image_size)
        return Carry(dropout(self.norm(x), self.dropout, self.training))


class PoolHead(nn.Module):
    def __init__(self, c: SwinConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.classifier = nn.Linear(c.hidden_size, c.num_labels)

    def forward(self, carry: Carry) -> Tensor:
        return self.classifier(self.norm(carry.hidden).mean(dim=1))


class SwinModel(GalvatronModel):
    input_names = ("pixel_values",)

    def __init__(self, config: SwinConfig) -> None:
        super().__init__(config)
        self.embed = SwinEmbed(config)
        layers: list[nn.Module] = []
        for stage, depth in enumerate(config.depths):
            if stage:
                layers.append(PatchMerging(config, stage))
            layers += [SwinBlock(config, stage, j) for j in range(depth)]
        self.layers = nn.ModuleList(layers)
        self.head = PoolHead(config)
        self.record_ties()

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


# ---------------------------------------------------------------------------- spec


def _block_spec(c: SwinConfig, stage: int) -> S.LayerTypeSpec:
    """A Swin block. The relative bias is trainable, so on CPU SDPA takes its (float32) math
    fallback (the softmax output, ``heads * N`` per token with ``N = window**2``, is kept; the
    bias and the shift mask are not). Shifted and plain blocks save the same."""
    dim, heads, ws = c.dim(stage), c.num_heads[stage], c.window_size
    f, n, d = int(c.mlp_ratio * dim), ws * ws, dim // heads
    pre = S.norm_saved("norm1", dim, False) + [S.linear_input_saved("attn.windows", dim)]
    post = [S.SavedTensor("attn.rel_index", fixed=n * n, elem=S.Elem.INT64, shard=S.Shard.NONE,
                          sp_split=False)] + S.norm_saved("norm2", dim, False) + S.gelu_mlp_saved(dim, f)
    _, fallback = S.sdpa_saved("attn", heads, heads, d, span=n, fp32=True)
    _, math = S.sdpa_saved("attn", heads, heads, d, span=n)
    matmul = 4 * dim * dim + 2 * dim * f
    params = 4 * dim + matmul + 4 * dim + f + dim + (2 * ws - 1) ** 2 * heads
    return S.LayerTypeSpec(f"swin_stage{stage}", params, dim, heads, heads, d, f,
                           matmul_params=matmul, attn_ops=1, attn_span=n, token_div=4 ** stage,
                           input_per_token=dim, saved=tuple(pre + fallback + post),
                           saved_math=tuple(pre + math + post),
                           # the trainable bias sends SDPA to its math fallback: recomputed
                           kept_selective=tuple(S.attn_kept_selective("attn", dim, heads, heads, d, fused=False)
                                                + S.mlp_kept_selective("mlp", dim, (f,))))


def _merge_spec(c: SwinConfig, stage: int) -> S.LayerTypeSpec:
    dim = c.dim(stage - 1)
    saved = S.norm_saved("norm", 4 * dim, False) + [S.linear_input_saved("reduction.input", 4 * dim)]
    return S.LayerTypeSpec(f"swin_merge{stage}", 8 * dim + 8 * dim * dim, 2 * dim,
                           matmul_params=8 * dim * dim, token_div=4 ** stage,
                           input_per_token=4 * dim, saved=tuple(saved))
    # selective: the reduction's output is the layer output, so only the input is kept


def swin_spec(c: SwinConfig) -> S.ModelSpec:
    specs: dict[str, S.LayerTypeSpec] = {}
    types: list[str] = []
    for stage, depth in enumerate(c.depths):
        if stage:
            specs[f"swin_merge{stage}"] = _merge_spec(c, stage)
            types.append(f"swin_merge{stage}")
        specs[f"swin_stage{stage}"] = _block_spec(c, stage)
        types += [f"swin_stage{stage}"] * depth
    e, p, h = c.embed_dim, c.patch_size, c.hidden_size
    embed = S.LayerTypeSpec(
        "swin_embed", c.num_channels * p * p * e + e + 2 * e, e,
        matmul_params=c.num_channels * p * p * e,
        saved=(S.SavedTensor("pixel_values", per_sample=c.num_channels * c.image_size ** 2,
                             shard=S.Shard.NONE), *S.norm_saved("norm", e, False)))
    last = len(c.depths) - 1
    head_saved = S.cls_head_saved(h, c.num_labels)
    head_saved = (*head_saved[:1], S.SavedTensor("norm.stats", per_token=2, elem=S.Elem.LN_STATS,
                                                 shard=S.Shard.SEQ), *head_saved[2:])
    head = S.LayerTypeSpec("swin_head", 2 * h + h * c.num_labels + c.num_labels, h,
                           token_div=4 ** last, saved=head_saved)
    return S.ModelSpec(c.name, c.family, embed, head, specs, tuple(types), c.resolution(0) ** 2)


# ---------------------------------------------------------------------------- Hugging Face


def _config_from_hf(hc: Any) -> SwinConfig:
    if hc.hidden_act != "gelu" or not hc.qkv_bias or hc.use_absolute_embeddings:
        raise ValueError("hidden_act/qkv_bias/use_absolute_embeddings: only 'gelu', True, "
                         "False are supported")
    return SwinConfig(name=getattr(hc, "name_or_path", "") or "swin-hf", image_size=hc.image_size,
                      patch_size=hc.patch_size, num_channels=hc.num_channels,
                      num_labels=hc.num_labels, embed_dim=hc.embed_dim, depths=tuple(hc.depths),
                      num_heads=tuple(hc.num_heads), window_size=hc.window_size,
                      mlp_ratio=hc.mlp_ratio, layer_norm_eps=hc.layer_norm_eps,
                      dropout=hc.hidden_dropout_prob)


def _config_to_hf(c: SwinConfig) -> Any:
    import transformers

    return transformers.SwinConfig(
        image_size=c.image_size, patch_size=c.patch_size, num_channels=c.num_channels,
        num_labels=c.num_labels, embed_dim=c.embed_dim, depths=list(c.depths),
        num_heads=list(c.num_heads), window_size=c.window_size, mlp_ratio=c.mlp_ratio,
        layer_norm_eps=c.layer_norm_eps, hidden_dropout_prob=c.dropout,
        attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
        architectures=["SwinForImageClassification"],
    )


def _rules(c: SwinConfig) -> list[Rule]:
    e = "swin.embeddings."
    r = [*weight_bias("embed.patch", f"{e}patch_embeddings.projection"),
         *weight_bias("embed.norm", f"{e}norm")]
    i = 0
    for stage, depth in enumerate(c.depths):
        if stage:
            t = f"swin.encoder.layers.{stage - 1}.downsample."
            r += [*weight_bias(f"layers.{i}.norm", f"{t}norm"),
                  same(f"layers.{i}.reduction.weight", f"{t}reduction.weight")]
            i += 1
        for j in range(depth):
            o, t = f"layers.{i}.", f"swin.encoder.layers.{stage}.blocks.{j}."
            r += [*weight_bias(f"{o}norm1", f"{t}layernorm_before"),
                  *weight_bias(f"{o}norm2", f"{t}layernorm_after"),
                  *weight_bias(f"{o}mlp.fc_in", f"{t}mlp.fc1"),
                  *weight_bias(f"{o}mlp.fc_out", f"{t}mlp.fc2"),
                  same(f"{o}attn.rel_bias",
                       f"{t}attention.relative_position_bias.relative_position_bias_table")]
            r += [x for p in "qkvo" for x in weight_bias(f"{o}attn.{p}_proj", f"{t}attention.{p}_proj")]
            i += 1
    return r + [*weight_bias("head.norm", "swin.layernorm"),
                *weight_bias("head.classifier", "classifier")]


_DISK = (
    (r"attention\.q_proj", "attention.self.query"),
    (r"attention\.k_proj", "attention.self.key"),
    (r"attention\.v_proj", "attention.self.value"),
    (r"attention\.o_proj", "attention.output.dense"),
    (r"attention\.relative_position_bias\.", "attention.self."),
    (r"mlp\.fc1", "intermediate.dense"),
    (r"mlp\.fc2", "output.dense"),
)
HF = HFAdapter(("SwinForImageClassification",), _config_from_hf, _config_to_hf, _rules,
               ignore=(r".*relative_position_index",), disk_renames=_DISK)
FAMILY = Family("swin", SwinConfig, SwinModel, FLAVOURS, swin_spec, HF)
