"""This rank's pieces of the model: layers, embedding and head as *units*.

A unit is a module with one strategy, its process groups and its parameters' metadata
(full name in the single-process model, tp slice ``(dim, start, length)`` or None,
``tp_partial``). Units take and return plain tensors, so FSDP2 and activation
checkpointing wrap them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from galvatron.models.base import Carry
from galvatron.parallel.mesh import Coord
from galvatron.plan import LayerStrategy


@dataclass
class ParamMeta:
    name: str  # name in the single-process model (tied aliases: the owner's name)
    src: tuple[int, int, int] | None  # tp slice (dim, start, length); None = whole
    tp_partial: bool  # gradient is a partial sum over the tp group (Megatron-SP)
    tied_alias: bool = False  # a second copy of a tied weight (its norm is not counted)
    vocab: bool = False  # the vocabulary embedding / projection weight


@dataclass
class Unit:
    name: str
    module: nn.Module
    strategy: LayerStrategy
    coord: Coord
    tp_group: object
    sp_group: object
    weight_group: object
    meta: list[ParamMeta] = field(default_factory=list)
    fsdp: bool = False
    zero1: object = None  # ZeroOneShard
    ddp: object = None  # OverlappedAllReduce (DDP units with a weight group > 1)
    dp_params: list = field(default_factory=list)  # params this unit syncs (shared ones once)

    def params(self) -> list[nn.Parameter]:
        return list(self.module.parameters())


class LayerIO(nn.Module):
    """One model layer as ``(hidden, mask) -> hidden``, optionally checkpointed."""

    def __init__(self, block: nn.Module, ckpt: bool) -> None:
        super().__init__()
        self.block, self.ckpt = block, ckpt

    def _run(self, hidden, mask):
        return self.block(Carry(hidden, mask)).hidden

    def forward(self, hidden, mask=None):
        if self.ckpt:
            return checkpoint(self._run, hidden, mask, use_reentrant=False)
        return self._run(hidden, mask)


class EmbedIO(nn.Module):
    """The model's embedding on a batch block of ids; Ulysses keeps sequence block
    ``[s0, s1)`` (plain slice: the weight gradient is a partial sum over sp)."""

    def __init__(self, embed: nn.Module, s0: int, s1: int, full: bool,
                 key: str = "input_ids") -> None:
        super().__init__()
        self.embed, self.s0, self.s1, self.full, self.key = embed, s0, s1, full, key

    def forward(self, ids):
        h = self.embed({self.key: ids}).hidden
        return h if self.full else h[:, self.s0:self.s1]


class HeadIO(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden):
        return self.head(Carry(hidden))


def strip_wrappers(name: str) -> str:
    """Parameter name inside a unit -> name in the single-process module."""
    parts = [p for p in name.split(".") if p not in ("inner", "block", "embed_io", "head_io")]
    return ".".join(parts)


def describe_params(module: nn.Module, prefix: str, names_by_id: dict[int, str]) -> list[ParamMeta]:
    out = []
    for n, p in module.named_parameters():
        full = names_by_id.get(id(p)) or prefix + strip_wrappers(n)
        out.append(ParamMeta(full, getattr(p, "_src", None), bool(getattr(p, "_tp_partial", False))))
    return out


def local_grad(p: torch.Tensor) -> torch.Tensor | None:
    g = p.grad
    if g is None:
        return None
    return g.to_local() if hasattr(g, "to_local") else g


def local_data(p: torch.Tensor) -> torch.Tensor:
    return p.to_local() if hasattr(p, "to_local") else p
