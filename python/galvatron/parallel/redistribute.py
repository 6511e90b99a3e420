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
    n_batch: int
    n_seq: int
    replicas: int
    consecutive: bool

    def block(self, i: int, b: int, s: int) -> tuple[int, int, int, int, int]:
        """``(b0, b1, s0, s1, cls)`` of device ``i`` for a ``[b, s]`` micro-batch."""
        if self.consecutive:
            bi, si = i // (self.n_seq * self.replicas), (i // self.replicas) % self.n_seq
        else:
            bi, si = i % self.n_batch, (i // self.n_batch) % self.n_seq
        bs, ss = b // self.n_batch, s // self.n_seq
        return bi * bs, (bi + 1) * bs, si * ss, (si + 1) * ss, bi * self.n_seq + si

    def device(self, cls: int, r: int) -> int:
        bi, si = divmod(cls, self.n_seq)
        if self.consecutive:
            return (bi * self.n_seq + si) * self.replicas + r
        return (r * self.n_seq + si) * self.n_batch + bi


def layout_of(s: LayerStrategy, n: int) -> Layout:
    """Activation layout of a layer with strategy ``s`` in a stage of ``n`` devices."""
    n_batch = n // (s.tp * s.sp)
    n_seq = s.sp * (s.tp if s.sp_kind is SpKind.MEGATRON else 1)
    replicas = 1 if s.sp_kind is SpKind.MEGATRON else s.tp
    return Layout(n_batch, n_seq, replicas, s.tp_consecutive or n_batch == 1 or n_seq * replicas == 1)


def embedding_layout(s: LayerStrategy, n: int) -> Layout:
    """Layout of the embedding output and head input: Megatron-SP is run as plain TP there
    (replicated over tp; the neighbouring redistribution does the sequence split/gather)."""
    if s.sp_kind is SpKind.MEGATRON:
        s = LayerStrategy(tp=s.tp, sp=1, tp_consecutive=s.tp_consecutive)
    return layout_of(s, n)


def boundary_layout(n: int, micro_batch: int) -> Layout:
    nb = math.gcd(n, micro_batch)
    return Layout(nb, n // nb, 1, True)


def _overlap(a, b):
    b0, b1 = max(a[0], b[0]), min(a[1], b[1])
    s0, s1 = max(a[2], b[2]), min(a[3], b[3])
    return (b0, b1, s0, s1) if b1 > b0 and s1 > s0 else None


def exchange_plan(src: Layout, dst: Layout, n: int, b: int, s: int):
    """For every destination device: list of ``(source device, piece)`` in class order; the
    source is the destination itself for a local copy. Pieces are absolute
    ``(b0, b1, s0, s1)`` boxes."""
    plan = []
    for k in range(n):
        need = dst.block(k, b, s)
        own = src.block(k, b, s)[4]
        bs, ss = b // src.n_batch, s // src.n_seq
        pieces = []
        for bi in range(need[0] // bs, -(-need[1] // bs)):
            for si in range(need[2] // ss, -(-need[3] // ss)):
                c = bi * src.n_seq + si
                box = _overlap(need, (bi * bs, (bi + 1) * bs, si * ss, (si + 1) * ss))
                if box is None:
                    continue
                dev = k if c == own else src.device(c, k % src.replicas)
                pieces.append((dev, box))
        plan.append(pieces)
    return plan


def _move(x: torch.Tensor, src: Layout, dst: Layout, me: int, n: int, b: int, s: int,
          group) -> torch.Tensor:
    plan = exchange_plan(src, dst, n, b, s)
    have = src.block(me, b, s)
    need = dst.block(me, b, s)
    rest = tuple(x.shape[2:])
    out = x.new_empty((need[1] - need[0], need[3] - need[2], *rest))

    def view(t, base, box):
        return t[box[0] - base[0]:box[1] - base[0], box[2] - base[2]:box[3] - base[2]]

    send = [[] for _ in range(n)]
    for k in range(n):
        for dev, box in plan[k]:
            if dev == me and k != me:
                send[k].append(view(x, have, box).reshape(-1))
    remote = any(dev != k for k in range(n) for dev, _ in plan[k])
    recv_pieces = [(dev, box) for dev, box in plan[me] if dev != me]
    for dev, box in plan[me]:
        if dev == me:
            view(out, need, box).copy_(view(x, have, box))
    if not remote:
        return out
    per = math.prod(rest)
    in_splits = [sum(t.numel() for t in send[k]) for k in range(n)]
    out_splits = [0] * n
    for dev, box in recv_pieces:
        out_splits[dev] += (box[1] - box[0]) * (box[3] - box[2]) * per
    flat_in = torch.cat([t for k in range(n) for t in send[k]]) if sum(in_splits) else x.new_empty(0)
    flat_out = x.new_empty(sum(out_splits))
    dist.all_to_all_single(flat_out, flat_in, out_splits, in_splits, group=group)
    offsets = [sum(out_splits[:d]) for d in range(n)]
    for dev, box in recv_pieces:  # per source, pieces arrive in class order
        numel = (box[1] - box[0]) * (box[3] - box[2]) * per
        piece = flat_out[offsets[dev]:offsets[dev] + numel]
        offsets[dev] += numel
        view(out, need, box).copy_(piece.view(box[1] - box[0], box[3] - box[2], *rest))
    return out


class _Redistribute(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, src, dst, me, n, b, s, group):
        ctx.args = (src, dst, me, n, b, s, group)
        with region("redistribution"):
            return _move(x.contiguous(), src, dst, me, n, b, s, group)

    @staticmethod
    def backward(ctx, g):
        src, dst, me, n, b, s, group = ctx.args
        with region("redistribution"):
            return _move(g.contiguous(), dst, src, me, n, b, s, group), *([None] * 7)


def needs_move(src: Layout, dst: Layout) -> bool:
    return src != dst


def redistribute(x: torch.Tensor, src: Layout, dst: Layout, me: int, n: int, b: int, s: int,
                 group) -> torch.Tensor:
    """Move the local block ``x`` (``[b_local, s_local, ...]``) of a ``[b, s, ...]``
    micro-batch from layout ``src`` to ``dst`` over the stage ``group`` (``me`` = local
    index, ``n`` = stage size). Identity when the layouts are equal."""
    if src == dst or n == 1:
        return x
    return _Redistribute.apply(x, src, dst, me, n, b, s, group)
