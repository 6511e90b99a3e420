"""Activation layouts of a pipeline stage and the all-to-all that moves between two of them.

Mirrors ``csrc/search/comm_model.cpp`` (``layout_of``, ``boundary_layout``,
``max_exchange_units``), so the runtime moves exactly what the cost model charges:

- A layout splits the micro-batch ``[B, S, ...]`` of a stage into ``n_batch x n_seq`` blocks,
  each held by ``replicas`` devices. Consecutive order: device ``i`` holds batch block
  ``i // (n_seq*replicas)``, sequence block ``(i // replicas) % n_seq``; strided order:
  batch block ``i % n_batch``, sequence block ``(i // n_batch) % n_seq``.
- Moving ``a -> b``: every device gathers its ``b`` block; pieces it already holds in ``a`` are
  copied locally, every other piece comes from replica ``dest % a.replicas`` of the ``a``
  block holding it. One ``all_to_all_single`` (uneven splits) over the stage group, skipped
  when nothing moves. Backward moves the gradients ``b -> a`` with the same rule, so every
  replica of a replicated layout receives the full gradient of its block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from galvatron.parallel.instrument import region
from galvatron.plan import LayerStrategy, SpKind


@dataclass(frozen=True)
class Layout:
    """How a stage's devices hold a ``[batch, seq, ...]`` micro-batch: ``n_batch x n_seq``
    blocks, each on ``replicas`` devices, in consecutive or strided device order."""

    n_batch: int
    n_seq: int
    replicas: int
    consecutive: bool

    def __post_init__(self) -> None:
        # Both device orders place every device alike when at most one count exceeds 1: then
        # the layout is stored as consecutive, so that equality is the cost model's
        # (``Layout::operator==`` in csrc/search/cost_model.h).
        if self.order_is_moot():
            object.__setattr__(self, "consecutive", True)

    def order_is_moot(self) -> bool:
        return (self.n_batch > 1) + (self.n_seq > 1) + (self.replicas > 1) <= 1

    def block(self, device: int, batch: int, seq: int) -> tuple[int, int, int, int, int]:
        """``(row0, row1, col0, col1, block)`` of ``device`` (its index in the stage) for a
        ``[batch, seq]`` micro-batch: its rows and sequence positions, and its block index."""
        if self.consecutive:
            batch_block = device // (self.n_seq * self.replicas)
            seq_block = (device // self.replicas) % self.n_seq
        else:
            batch_block, seq_block = device % self.n_batch, (device // self.n_batch) % self.n_seq
        rows, cols = batch // self.n_batch, seq // self.n_seq
        return (batch_block * rows, (batch_block + 1) * rows, seq_block * cols,
                (seq_block + 1) * cols, batch_block * self.n_seq + seq_block)

    def device(self, block: int, replica: int) -> int:
        """The stage index of replica ``replica`` of block ``block``."""
        batch_block, seq_block = divmod(block, self.n_seq)
        if self.consecutive:
            return (batch_block * self.n_seq + seq_block) * self.replicas + replica
        return (replica * self.n_seq + seq_block) * self.n_batch + batch_block


def layout_of(s: LayerStrategy, stage_size: int) -> Layout:
    """Activation layout of a layer with strategy ``s`` in a stage of ``stage_size`` devices."""
    n_batch = stage_size // (s.tp * s.sp)
    n_seq = s.sp * (s.tp if s.sp_kind is SpKind.MEGATRON else 1)
    replicas = 1 if s.sp_kind is SpKind.MEGATRON else s.tp
    return Layout(n_batch, n_seq, replicas, s.tp_consecutive)


def embedding_layout(s: LayerStrategy, stage_size: int) -> Layout:
    """Layout of the embedding output and head input: Megatron-SP is run as plain TP there
    (replicated over tp; the neighbouring redistribution does the sequence split/gather)."""
    if s.sp_kind is SpKind.MEGATRON:
        s = LayerStrategy(tp=s.tp, sp=1, tp_consecutive=s.tp_consecutive)
    return layout_of(s, stage_size)


def boundary_layout(stage_size: int, micro_batch: int) -> Layout:
    """Layout of the activations sent between pipeline stages: every device one block."""
    n_batch = math.gcd(stage_size, micro_batch)
    return Layout(n_batch, stage_size // n_batch, 1, True)


def _overlap(a, b):
    row0, row1 = max(a[0], b[0]), min(a[1], b[1])
    col0, col1 = max(a[2], b[2]), min(a[3], b[3])
    return (row0, row1, col0, col1) if row1 > row0 and col1 > col0 else None


def exchange_plan(src: Layout, dst: Layout, stage_size: int, batch: int, seq: int):
    """For every destination device: list of ``(source device, piece)`` in block order; the
    source is the destination itself for a local copy. Pieces are absolute
    ``(row0, row1, col0, col1)`` boxes."""
    plan = []
    rows, cols = batch // src.n_batch, seq // src.n_seq
    for k in range(stage_size):
        need = dst.block(k, batch, seq)
        own = src.block(k, batch, seq)[4]
        pieces = []
        for batch_block in range(need[0] // rows, -(-need[1] // rows)):
            for seq_block in range(need[2] // cols, -(-need[3] // cols)):
                block = batch_block * src.n_seq + seq_block
                box = _overlap(need, (batch_block * rows, (batch_block + 1) * rows,
                                      seq_block * cols, (seq_block + 1) * cols))
                if box is None:
                    continue
                source = k if block == own else src.device(block, k % src.replicas)
                pieces.append((source, box))
        plan.append(pieces)
    return plan


def _move(x: torch.Tensor, src: Layout, dst: Layout, local_rank: int, stage_size: int,
          batch: int, seq: int, group) -> torch.Tensor:
    plan = exchange_plan(src, dst, stage_size, batch, seq)
    have = src.block(local_rank, batch, seq)
    need = dst.block(local_rank, batch, seq)
    rest = tuple(x.shape[2:])
    out = x.new_empty((need[1] - need[0], need[3] - need[2], *rest))

    def view(t, base, box):
        return t[box[0] - base[0]:box[1] - base[0], box[2] - base[2]:box[3] - base[2]]

    send = [[] for _ in range(stage_size)]
    for k in range(stage_size):
        for source, box in plan[k]:
            if source == local_rank and k != local_rank:
                send[k].append(view(x, have, box).reshape(-1))
    remote = any(source != k for k in range(stage_size) for source, _ in plan[k])
    recv_pieces = [(source, box) for source, box in plan[local_rank] if source != local_rank]
    for source, box in plan[local_rank]:
        if source == local_rank:
            view(out, need, box).copy_(view(x, have, box))
    if not remote:
        return out
    per = math.prod(rest)
    in_splits = [sum(t.numel() for t in send[k]) for k in range(stage_size)]
    out_splits = [0] * stage_size
    for source, box in recv_pieces:
        out_splits[source] += (box[1] - box[0]) * (box[3] - box[2]) * per
    flat_in = (torch.cat([t for k in range(stage_size) for t in send[k]]) if sum(in_splits)
               else x.new_empty(0))
    flat_out = x.new_empty(sum(out_splits))
    dist.all_to_all_single(flat_out, flat_in, out_splits, in_splits, group=group)
    offsets = [sum(out_splits[:d]) for d in range(stage_size)]
    for source, box in recv_pieces:  # per source, pieces arrive in block order
        numel = (box[1] - box[0]) * (box[3] - box[2]) * per
        piece = flat_out[offsets[source]:offsets[source] + numel]
        offsets[source] += numel
        view(out, need, box).copy_(piece.view(box[1] - box[0], box[3] - box[2], *rest))
    return out


class _Redistribute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, src, dst, local_rank, stage_size, batch, seq, group):
        ctx.args = (src, dst, local_rank, stage_size, batch, seq, group)
        with region("redistribution"):
            return _move(x.contiguous(), src, dst, local_rank, stage_size, batch, seq, group)

    @staticmethod
    def backward(ctx, g):
        src, dst, local_rank, stage_size, batch, seq, group = ctx.args
        with region("redistribution"):
            return (_move(g.contiguous(), dst, src, local_rank, stage_size, batch, seq, group),
                    *([None] * 7))


def needs_move(src: Layout, dst: Layout) -> bool:
    return src != dst


def redistribute(x: torch.Tensor, src: Layout, dst: Layout, local_rank: int, stage_size: int,
                 batch: int, seq: int, group) -> torch.Tensor:
    """Move the local block ``x`` (``[rows, cols, ...]``) of a ``[batch, seq, ...]``
    micro-batch from layout ``src`` to ``dst`` over the stage ``group`` (``local_rank``: this
    rank's index in the stage of ``stage_size`` devices). Identity when the layouts are equal."""
    if src == dst or stage_size == 1:
        return x
    return _Redistribute.apply(x, src, dst, local_rank, stage_size, batch, seq, group)
