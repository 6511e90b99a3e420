"""DeepSpeed-Ulysses: all-to-all around ``attn.core`` (sequence-sharded <-> head-sharded).

Outside attention the layer sees ``[b, s/sp, ...]``; ``core`` sees the full sequence with
``H/sp`` local heads. Uses the C++ packing kernels of :mod:`galvatron.parallel.packing`
(pack/unpack around one ``all_to_all_single`` per direction).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from galvatron.parallel import packing
from galvatron.parallel.instrument import region
from galvatron.parallel.tensor_parallel import find_blocks


def _a2a(buf, group):
    with region("sp_comm"):
        out = torch.empty_like(buf)
        dist.all_to_all_single(out, buf, group=group)
    return out


class _SeqToHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sp, group):
        ctx.sp, ctx.group = sp, group
        ctx.shapes = [tuple(t.shape) for t in (q, k, v)]
        outs = []
        for t in (q, k, v):
            shape = list(t.shape)
            shape[1] *= sp
            shape[2] //= sp
            outs.append(shape)
        ctx.out_shapes = outs
        buf = _a2a(packing.ulysses_pack_qkv(q.contiguous(), k.contiguous(), v.contiguous(), sp), group)
        return packing.ulysses_unpack_qkv(buf, sp, *outs)

    @staticmethod
    def backward(ctx, dq, dk, dv):
        buf = packing.pack_dim_chunks([dq.contiguous(), dk.contiguous(), dv.contiguous()], 1, ctx.sp)
        buf = _a2a(buf, ctx.group)
        return (*packing.unpack_dim_chunks(buf, 2, ctx.sp, ctx.shapes), None, None)


class _HeadsToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, o, sp, group):
        ctx.sp, ctx.group, ctx.shape = sp, group, tuple(o.shape)
        shape = list(o.shape)
        shape[1] //= sp
        shape[2] *= sp
        buf = _a2a(packing.ulysses_pack_out(o.contiguous(), sp), group)
        return packing.ulysses_unpack_out(buf, sp, shape)

    @staticmethod
    def backward(ctx, do):
        buf = _a2a(packing.pack_dim_chunks([do.contiguous()], 2, ctx.sp), ctx.group)
        return packing.unpack_dim_chunks(buf, 1, ctx.sp, [ctx.shape])[0], None, None


class UlyssesCore:
    """Replaces ``attn.core`` (an instance attribute shadowing the method)."""

    def __init__(self, core, sp: int, group) -> None:
        self.core, self.sp, self.group = core, sp, group

    def __call__(self, q, k, v, mask):
        q, k, v = _SeqToHeads.apply(q, k, v, self.sp, self.group)
        return _HeadsToSeq.apply(self.core(q, k, v, mask), self.sp, self.group)


def apply_ulysses(layer, sp: int, j: int, group) -> None:
    """Wrap every attention ``core`` of ``layer`` for Ulysses rank ``j`` of ``sp``. Call after
    :func:`apply_tp` (local heads are split further by ``sp``)."""
    if sp == 1:
        return
    for _, _, m, kind in find_blocks(layer):
        if kind != "attn":
            continue
        heads = m.q_proj.weight.shape[0] // m.head_dim
        m.head_start = getattr(m, "head_start", 0) + j * heads // sp
        m.core = UlyssesCore(m.core, sp, group)
