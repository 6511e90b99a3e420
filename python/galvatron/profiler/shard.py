"""Local shards and simulated ranks used by the model profiler (no process group needed).

- :func:`tp_shard`: rank 0's Megatron tensor-parallel shard of a layer: q/k/v and
  fc_in/gate/up split by output columns, o_proj and fc_out/down by input rows, norms replicated.
- :func:`megatron_sp_forward`: rank 0 of tp=d with Megatron sequence parallelism (pre-norm
  blocks): norms on ``s/d`` tokens, all-gather / reduce-scatter replaced by shape-equivalent
  local ops, column-parallel linears keeping only the sequence shard (the runtime's).
- :func:`ulysses_layer`: rank 0 of Ulysses sp=d: the attention core sees the full sequence and
  ``1/d`` of the heads through simulated all-to-alls.
- :func:`head_shard`: the vocabulary-parallel shard of a head.

The simulated collectives save nothing for backward themselves, so the saved bytes measured
on these modules are what one rank of the real runtime keeps (the same construction as the
spec tests in ``tests/unit/test_models_spec.py``).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

COLUMN = ("q_proj", "k_proj", "v_proj", "fc_in", "gate_proj", "up_proj")
ROW = ("o_proj", "fc_out", "down_proj")

def split_linear(lin: nn.Linear, d: int, column: bool) -> nn.Linear:
    n_out, n_in = lin.weight.shape
    if (n_out if column else n_in) % d:
        raise ValueError(f"{n_out if column else n_in} features not divisible by {d}")
    shape = (n_out // d, n_in) if column else (n_out, n_in // d)
    new = nn.Linear(shape[1], shape[0], bias=lin.bias is not None, device=lin.weight.device,
                    dtype=lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight[: shape[0], : shape[1]])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[: shape[0]])
    return new


def tp_shard(layer: nn.Module, d: int) -> nn.Module:
    """Rank 0's Megatron tensor-parallel shard of a layer (a copy). Raises ValueError when a
    projection does not split evenly."""
    shard = copy.deepcopy(layer)
    if d == 1:
        return shard
    for mod in list(shard.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.Linear) and child_name in COLUMN + ROW:
                setattr(mod, child_name, split_linear(child, d, child_name in COLUMN))
    return shard


def is_prenorm(layer: nn.Module) -> bool:
    from galvatron.models.layers import PreNormBlock

    return isinstance(layer, PreNormBlock)


def _gather_seq(t: torch.Tensor, d: int) -> torch.Tensor:  # all-gather along the sequence; saves nothing
    return torch.cat([t] + [torch.randn(t.shape, device=t.device).to(t.dtype) for _ in range(d - 1)], dim=1)


class _ShardKeepingColumn(nn.Module):
    """A column-parallel linear as the runtime runs it under Megatron-SP: on a gathered input
    tagged with its shard, the runtime's ``_ShardSavingLinear`` (keeps the shard, not the
    gathered input; forward only here, its backward would re-gather over a process group)."""

    def __init__(self, lin: nn.Linear) -> None:
        super().__init__()
        self.lin = lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from galvatron.parallel.tensor_parallel import _ShardSavingLinear

        ref = getattr(x, "_sp_shard", None)
        if ref is None or not torch.is_grad_enabled():
            return self.lin(x)
        return _ShardSavingLinear.apply(x, self.lin.weight, self.lin.bias, ref)


def _gather_tagged(t: torch.Tensor, d: int) -> torch.Tensor:
    from galvatron.parallel.tensor_parallel import _SeqShard

    full = _gather_seq(t, d)
    full._sp_shard = _SeqShard(t, None)
    return full


def megatron_sp_forward(shard: nn.Module, d: int, seq: int) -> Callable[[Any], Any]:
    """Forward of rank 0 of a pre-norm block under tp=d with Megatron-SP: norms on seq/d
    tokens, all-gather before the column-parallel linears (which keep only the sequence shard,
    as the runtime's), reduce-scatter (a slice) after. Forward only (bytes, not times)."""
    from galvatron.models.layers import dropout

    def fwd(carry: Any) -> Any:
        swapped = []
        for block in (shard.attn, shard.mlp):  # the runtime's column linears, for this call
            for name in COLUMN:
                lin = getattr(block, name, None)
                if isinstance(lin, nn.Linear):
                    setattr(block, name, _ShardKeepingColumn(lin))
                    swapped.append((block, name, lin))
        try:
            x, mask = carry.hidden, carry.mask
            a = shard.attn(_gather_tagged(shard.norm1(x), d), mask)[:, : seq // d]
            x = x + dropout(a, shard.dropout, shard.training)
            m = shard.mlp(_gather_tagged(shard.norm2(x), d))[:, : seq // d]
            return dataclasses.replace(carry, hidden=x + dropout(m, shard.dropout, shard.training))
        finally:
            for block, name, lin in swapped:
                setattr(block, name, lin)

    return fwd


def ulysses_layer(layer: nn.Module, d: int, seq: int) -> nn.Module:
    """Rank 0 of Ulysses sp=d: a copy whose attention cores see the full sequence and 1/d of
    the heads (the all-to-alls simulated by local slices and concatenations)."""
    sim = copy.deepcopy(layer)
    core = sim.attn.core

    def ulysses_core(q, k, v, mask):  # noqa: ANN001, ANN202
        def seq_to_heads(t):  # noqa: ANN001, ANN202 - [b, s/d, h, e] -> [b, s, h/d, e]
            mine = t[:, :, : t.shape[2] // d]
            return torch.cat([mine] + [torch.randn(mine.shape, device=t.device).to(t.dtype)] * (d - 1), dim=1)

        out = core(seq_to_heads(q), seq_to_heads(k), seq_to_heads(v), mask)
        mine = out[:, : seq // d]  # heads -> sequence
        return torch.cat([mine] + [torch.randn(mine.shape, device=out.device).to(out.dtype)] * (d - 1), dim=2)

    sim.attn.core = ulysses_core
    return sim


def seq_slice(carry: Any, d: int, seq: int) -> Any:
    return dataclasses.replace(carry, hidden=carry.hidden[:, : seq // d].detach().clone().requires_grad_())


def params_of(m: nn.Module) -> list[torch.Tensor]:
    return [*m.parameters(), *m.buffers()]


def head_shard(model: nn.Module, vocab: int | None, d: int) -> tuple[nn.Module, int]:
    """Rank 0's vocabulary-parallel shard of the head: the output projection whose width is
    the vocabulary keeps ``ceil(vocab / d)`` columns (a vocabulary ``d`` does not divide is
    padded, as the runtime does). Returns (shard, local vocabulary; 0 when nothing is split:
    ``d == 1`` or a head without a vocabulary projection, e.g. a classifier)."""
    shard = copy.deepcopy(model.head)
    if d == 1 or not vocab:
        return shard, 0
    local = -(-vocab // d)
    for mod in list(shard.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, nn.Linear) and child.out_features == vocab:
                new = nn.Linear(child.in_features, local, bias=child.bias is not None,
                                device=child.weight.device, dtype=child.weight.dtype)
                with torch.no_grad():
                    new.weight.copy_(child.weight[:local])
                    if child.bias is not None:
                        new.bias.copy_(child.bias[:local])
                setattr(mod, name, new)
                return shard, local
    return shard, 0
