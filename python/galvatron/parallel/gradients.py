"""Gradient finishing after the last micro-batch, and clipping by the global norm.

Finishing (in this order): the DDP all-reduces started during backward, the gradients of
parameters shared by several layers (summed over their holders), tied embedding/head pairs,
Megatron-SP partial sums over tp, and the ZeRO-1 reduce-scatter (FSDP2 reduced already).
Clipping computes one norm over every mesh, counting each gradient element once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from galvatron.parallel import data_parallel
from galvatron.parallel.instrument import region
from galvatron.parallel.units import Unit, local_grad

# (weight, its second copy on this rank or None, the group holding the other copy or None)
TiedPair = tuple[nn.Parameter, nn.Parameter | None, object]


def finish_grads(units: list[Unit], ties: list[TiedPair]) -> None:
    """After the last micro-batch: DDP sync (overlapped with backward), shared and tied
    parameters, Megatron-SP partial sums over tp, ZeRO-1 reduce-scatter."""
    for u in units:  # DDP all-reduces started in backward (sums commute with the rest)
        if u.ddp is not None:
            u.ddp.finish()
    for u in units:  # parameters shared by several layers: sum over their holders
        if u.replicated:
            data_parallel.all_reduce_grads(u.dp_params, u.weight_group)
    with region("dp_comm"):
        sync_ties(ties)
    for u in units:
        with region("tp_comm"):
            sum_tp_partial(u)
        if u.zero1 is not None:
            u.zero1.reduce_scatter()


def sync_ties(ties: list[TiedPair]) -> None:
    """Tied embedding/head weights: both copies get the sum of their gradients."""
    for weight, copy, group in ties:
        if copy is not None:  # both copies on this rank
            total = _local(weight.grad) + _local(copy.grad)
            _local(weight.grad).copy_(total)
            _local(copy.grad).copy_(total)
        elif group is not None:
            dist.all_reduce(_local(weight.grad), group=group)


def sum_tp_partial(u: Unit) -> None:
    """Megatron-SP: sum the partial gradients of ``u``'s whole parameters over tp."""
    partial = [p for p, m in zip(u.params(), u.meta, strict=True) if m.tp_partial]
    if not partial or u.tp_group is None:
        return
    for p in partial:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([_local(p.grad).reshape(-1) for p in partial])
    dist.all_reduce(flat, group=u.tp_group)
    offset = 0
    for p in partial:
        g = _local(p.grad)
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def clip_grad_norm(units: list[Unit], max_norm: float, device: torch.device) -> float:
    """Clip by the global gradient norm over every mesh (each gradient element counted
    once); returns the norm before clipping."""
    sq = torch.zeros((), dtype=torch.float64, device=device)
    seen: set[int] = set()
    for u in units:
        if u.zero1 is not None:
            _add_zero1_sq_norm(sq, u)
        else:
            _add_sq_norm(sq, u, seen)
    dist.all_reduce(sq)
    norm = float(sq.sqrt())
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        _scale(units, coef)
    return norm


def _add_sq_norm(sq: torch.Tensor, u: Unit, seen: set[int]) -> None:
    """Add to ``sq`` the squared norm of ``u``'s gradients, each element divided by the number
    of ranks holding it: its tp replicas (whole parameters) and, outside FSDP2, its
    weight-group replicas."""
    tp = u.strategy.tp
    weight_size = 1 if u.weight_group is None else dist.get_world_size(u.weight_group)
    for p, m in zip(u.params(), u.meta, strict=True):
        g = local_grad(p)
        if g is None or m.tied_alias or id(p) in seen:
            continue
        seen.add(id(p))
        copies = (1 if m.src else tp) * (1 if u.fsdp else weight_size)
        sq += g.double().pow(2).sum() / copies


def _add_zero1_sq_norm(sq: torch.Tensor, u: Unit) -> None:
    """Add to ``sq`` the squared norm of this rank's ZeRO-1 segments of ``u``'s gradient."""
    shard, tp = u.zero1, u.strategy.tp
    params = list(u.params())
    for p, a, b, _ in shard.segments():
        m = u.meta[_index(params, p)]
        if m.tied_alias:
            continue
        off = _offset(shard, p)
        g = shard.grad[off + a - shard.lo:off + b - shard.lo]
        sq += g.double().pow(2).sum() / (1 if m.src else tp)


def _scale(units: list[Unit], coef: float) -> None:
    """Multiply every local gradient (each once) and every ZeRO-1 shard gradient by ``coef``."""
    done: set[int] = set()
    for u in units:
        for p in u.params():
            g = local_grad(p)
            if g is not None and id(p) not in done:
                done.add(id(p))
                g.mul_(coef)
        if u.zero1 is not None and u.zero1.grad is not None:
            u.zero1.grad.mul_(coef)


def _local(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _index(params, p) -> int:
    for i, q in enumerate(params):
        if q is p:
            return i
    raise AssertionError


def _offset(shard, p) -> int:
    """Offset of ``p`` in the flat buffer of the ZeRO-1 ``shard``."""
    off = 0
    for q in shard.params:
        if q is p:
            return off
        off += q.numel()
    raise AssertionError
