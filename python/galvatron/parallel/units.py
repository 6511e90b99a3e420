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
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from galvatron.models.base import Carry
from galvatron.parallel.instrument import in_backward, region
from galvatron.parallel.mesh import Coord
from galvatron.plan import Checkpoint, LayerStrategy

_aten = torch.ops.aten
# Selective checkpointing keeps the outputs of these ops: the linear layers' matmuls and the
# fused attention kernels (output and log-sum-exp). Everything else in the layer -- norms,
# activation functions, element-wise ops, RoPE, the explicit-softmax attention path (bmm and
# softmax) and the collectives between them -- is recomputed in backward.
SELECTIVE_SAVE_OPS = frozenset(
    getattr(_aten, name).default
    for name in ("mm", "addmm", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                 "_scaled_dot_product_cudnn_attention")
    if hasattr(_aten, name)
)


def _selective_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:  # noqa: ANN001 - torch's signature
    return CheckpointPolicy.MUST_SAVE if op in SELECTIVE_SAVE_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def selective_context():  # noqa: ANN201 - the pair of torch dispatch modes
    """``context_fn`` of ``torch.utils.checkpoint.checkpoint`` for selective checkpointing."""
    return create_selective_checkpoint_contexts(_selective_policy)


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
    replicated: bool = False  # whole copy on every rank of weight_group (see shared.py)

    def params(self) -> list[nn.Parameter]:
        return list(self.module.parameters())


class LayerIO(nn.Module):
    """One model layer as ``(hidden, mask) -> hidden``, or for two-stream (encoder-decoder)
    models ``(hidden, mask, memory, memory_mask) -> hidden`` (memory passes unchanged) or, when
    ``swaps_streams`` (T5's last encoder layer), ``-> (hidden, memory)`` with the streams
    swapped, so the caller swaps its masks too; optionally checkpointed (``ckpt``: full keeps
    only the inputs, selective also the outputs of ``SELECTIVE_SAVE_OPS``)."""

    def __init__(self, block: nn.Module, ckpt: Checkpoint | bool) -> None:
        super().__init__()
        self.block = block
        self.ckpt = Checkpoint.FULL if ckpt is True else Checkpoint.NONE if ckpt is False else Checkpoint(ckpt)
        self.swaps_streams = bool(getattr(block, "swaps_streams", False))

    def _run(self, hidden, mask, memory=None, memory_mask=None):
        with region("recompute" if self.ckpt and in_backward() else None):
            return self._body(hidden, mask, memory, memory_mask)

    def _body(self, hidden, mask, memory, memory_mask):
        out = self.block(Carry(hidden, mask, memory, memory_mask))
        if memory is None:
            return out.hidden
        if self.swaps_streams:
            return out.hidden, out.memory
        if out.memory is not memory:
            raise ValueError(f"{type(self.block).__name__}: a layer that does not swap the streams "
                             "must return the second stream (memory) unchanged")
        # Not returned: the caller keeps it. Returned through FSDP2 it would get a pre-backward
        # hook per layer that fires when its gradient arrives (after the decoder), gathering
        # every encoder layer's ZeRO-3 parameters at once.
        return out.hidden

    def forward(self, hidden, mask=None, memory=None, memory_mask=None):
        args = (hidden, mask, memory, memory_mask)
        if self.ckpt is Checkpoint.FULL:
            return checkpoint(self._run, *args, use_reentrant=False)
        if self.ckpt is Checkpoint.SELECTIVE:
            return checkpoint(self._run, *args, use_reentrant=False, context_fn=selective_context)
        return self._run(*args)


class EmbedIO(nn.Module):
    """The model's embedding on a batch block of ids (and of the second stream's ids,
    ``memory_key``, for encoder-decoder models); Ulysses keeps sequence block ``si`` of
    ``n_seq`` of each stream (plain slice: the weight gradient is a partial sum over sp)."""

    def __init__(self, embed: nn.Module, si: int, n_seq: int, key: str = "input_ids",
                 memory_key: str | None = None) -> None:
        super().__init__()
        self.embed, self.si, self.n_seq, self.key = embed, si, n_seq, key
        self.memory_key = memory_key

    def _slice(self, h):
        step = h.shape[1] // self.n_seq
        return h if self.n_seq == 1 else h[:, self.si * step:(self.si + 1) * step]

    def forward(self, ids, memory_ids=None):
        batch = {self.key: ids}
        if memory_ids is not None:
            batch[self.memory_key] = memory_ids
        c = self.embed(batch)
        if memory_ids is None:
            return self._slice(c.hidden)
        return self._slice(c.hidden), self._slice(c.memory)


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
