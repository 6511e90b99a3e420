"""Tied embedding and head weights (GPT-2, T5, ...).

``pp == 1`` with ZeRO-2/3 on the embedding: the embedding and the head become one FSDP2 unit
(:class:`EmbedHead`), so the tied tensor is sharded, gathered and reduced once. Otherwise the two
copies (on this rank, or on the first and last stage) are kept equal by summing their gradients
(:func:`galvatron.parallel.gradients.sync_ties`).
"""

from __future__ import annotations

import torch
from torch import nn

from galvatron.parallel.units import Unit


class EmbedHead(nn.Module):
    """Embedding and head as one module (one FSDP2 unit sharding a tied tensor once); called
    with ``part`` = "embed" or "head"."""

    def __init__(self, embed: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.embed_io, self.head_io = embed, head
        self.zero3 = False  # set when FSDP2 shards it with ZeRO-3
        self.low_precision_params = False  # set when FSDP2 gathers bf16/fp16 copies

    def forward(self, *args, part: str):
        if not hasattr(self, "set_reshard_after_forward"):  # not sharded (one rank)
            return self.embed_io(*args) if part == "embed" else self.head_io(*args)
        if self.zero3:
            # ZeRO-3: free the gathered tensors after the embedding; keep them after the head,
            # whose backward follows at once (pp=1), instead of gathering them again
            self.set_reshard_after_forward(part == "embed")
        if part == "head":
            # one reduce-scatter per micro-batch, after the embedding's backward (the head's
            # gradient accumulates unsharded until then)
            self.set_requires_gradient_sync(False)
            return self.head_io(*args)
        out = self.embed_io(*args)
        for t in out if isinstance(out, tuple) else (out,):  # T5: two streams
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(self._sync_next)
                break
        return out

    def _sync_next(self, grad):
        self.set_requires_gradient_sync(True)  # the embedding's backward comes next
        if self.low_precision_params:
            self._uniform_grad_dtype()
        return grad

    def _uniform_grad_dtype(self) -> None:
        """FSDP2 (torch 2.13) upcasts the head's unsynced low-precision gradients to its fp32
        accumulators, but leaves the embedding-only parameters' gradients (computed next) in the
        low precision, and its reduce-scatter then refuses the mixed dtypes. Give every
        parameter without an accumulator a zero fp32 one, so all are summed into fp32."""
        group = self._get_fsdp_state()._fsdp_param_group
        for fp in group.fsdp_params if group is not None else ():
            if fp.reduce_dtype is not None and fp.unsharded_accumulated_grad is None:
                fp.unsharded_accumulated_grad = torch.zeros_like(fp._unsharded_param, dtype=fp.reduce_dtype)


class EmbedHeadPart:
    """Callable view of one part of :class:`EmbedHead` (not a module: no second
    registration of its parameters)."""

    def __init__(self, owner: EmbedHead, part: str) -> None:
        self.owner, self.part = owner, part

    def __call__(self, *args):
        return self.owner(*args, part=self.part)


def merge_tied(embed_u: Unit, head_u: Unit) -> tuple[Unit, Unit, Unit]:
    """``(embedding view, head view, the merged unit)``: the merged unit owns the parameters
    (the tied tensor once); the two views only call it."""
    pair = EmbedHead(embed_u.module, head_u.module)
    meta = list(embed_u.meta)
    for p, m in zip(head_u.module.parameters(), head_u.meta, strict=True):
        if all(p is not q for q in embed_u.module.parameters()):
            meta.append(m)
    unit = Unit("embed_head", pair, embed_u.strategy, embed_u.coord, embed_u.tp_group,
                embed_u.sp_group, embed_u.weight_group, meta)
    assert len(meta) == len(list(pair.parameters()))
    embed = Unit("embed", EmbedHeadPart(pair, "embed"), embed_u.strategy, embed_u.coord, None, None, None)
    head = Unit("head", EmbedHeadPart(pair, "head"), head_u.strategy, head_u.coord, None, None, None)
    return embed, head, unit


def vocab_param(units: list[Unit], which: str) -> nn.Parameter | None:
    """The vocabulary weight of the unit named ``which`` ("embed" or "head") on this rank."""
    for u in units:
        if u.name == which:
            for p, m in zip(u.params(), u.meta, strict=True):
                if m.vocab:
                    return p
    return None
