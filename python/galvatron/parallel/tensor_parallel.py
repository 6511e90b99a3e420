"""Megatron-style tensor parallelism (and Megatron-SP) on local tensors.

Collective operators, named by region and direction as in Megatron-LM (``group`` = the tp
group, sequence = dim 1):

=============================  ====================  ======================
operator                       forward               backward
=============================  ====================  ======================
``copy_to_tp_region`` (f)      identity              all-reduce
``reduce_from_tp_region`` (g)  all-reduce            identity
``gather_from_sp_region``      all-gather sequence   reduce-scatter sequence
``reduce_scatter_to_sp_region`` reduce-scatter seq.  all-gather sequence
=============================  ====================  ======================

Megatron-SP keeps only the sequence shard of each column-parallel linear's input (as
Megatron-LM): ``gather_from_sp_region`` tags the gathered tensor with its shard, and
``ColumnLinear`` on a tagged input runs ``_ShardSavingLinear``, which saves the shard (in the
compute dtype) instead of the gathered input and all-gathers it again in backward -- once per
gathered input (q/k/v, or gate/up, share it), overlapped with the input-gradient matmul.

``apply_tp(layer, ...)`` slices the attention (``q/k/v`` column, ``o`` row) and MLP
(``fc_in``/``gate``/``up`` column, ``fc_out``/``down`` row) of one layer in place and wraps
the attention and MLP modules with the input operator. Parameters that stay whole are marked
``_tp_partial`` under Megatron-SP (each rank sees only its sequence shard, so their gradients
are summed over tp). Slices are recorded as ``_src = (dim, start, length)`` on each parameter.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from galvatron.parallel import packing
from galvatron.parallel.instrument import region

# torch 2.13 names (the older names warn there); the older ones for torch < 2.13
all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

# ---------------------------------------------------------------------------- collectives


def _all_reduce(x, group):
    with region("tp_comm"):
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
    return x


def _gather_seq(x, group):
    with region("tp_comm"):
        group_size = dist.get_world_size(group)
        x = x.contiguous()
        buf = x.new_empty((group_size * x.shape[0], *x.shape[1:]))  # gloo: group_size stacked inputs
        all_gather_single(buf, x, group=group)
        shape = list(x.shape)
        shape[1] *= group_size
        return packing.unpack_dim_chunks(buf, 1, group_size, [shape])[0]


def _reduce_scatter_seq(x, group):
    with region("tp_comm"):
        group_size = dist.get_world_size(group)
        send = packing.pack_dim_chunks([x.contiguous()], 1, group_size)
        out = x.new_empty(send.shape[1])
        reduce_scatter_single(out, send.reshape(-1), group=group)
        shape = list(x.shape)
        shape[1] //= group_size
        return out.view(shape)


class _CopyToTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return _all_reduce(g, ctx.group), None


class _ReduceFromTP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx, g):
        return g, None


class _GatherSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _gather_seq(x, group)

    @staticmethod
    def backward(ctx, g):
        return _reduce_scatter_seq(g, ctx.group), None


class _ReduceScatterSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _reduce_scatter_seq(x, group)

    @staticmethod
    def backward(ctx, g):
        return _gather_seq(g, ctx.group), None


class _SeqShard:
    """The sequence shard behind a gathered tensor (``x_full._sp_shard``), shared by the
    column-parallel linears that read ``x_full``: the shard in the compute dtype while the
    block's forward runs (so they save one tensor), and the re-gathered input in backward from
    the first of their backward passes to the last (``uses``)."""

    __slots__ = ("cast", "full", "group", "shard", "uses")

    def __init__(self, shard, group) -> None:
        self.shard, self.group = shard, group
        self.cast: dict = {}
        self.full = None
        self.uses = 0

    def in_dtype(self, dtype):
        if dtype not in self.cast:
            self.cast[dtype] = self.shard.detach().to(dtype)
        return self.cast[dtype]


class _ShardSavingLinear(torch.autograd.Function):
    """``F.linear(x_full, weight, bias)`` where ``x_full`` is the all-gather of ``ref.shard``;
    saves the shard, not ``x_full``, and re-gathers it in backward (Megatron-LM's Megatron-SP
    memory). Under autocast the matmul and the saved shard are in the autocast dtype and the
    gradients are cast back, exactly as autocast's own ``linear`` does."""

    @staticmethod
    def forward(ctx, x_full, weight, bias, ref):
        out = F.linear(x_full, weight, bias)
        shard = ref.in_dtype(out.dtype)
        ref.uses += 1
        ctx.ref, ctx.has_bias = ref, bias is not None
        ctx.x_dtype, ctx.x_shape = x_full.dtype, x_full.shape
        ctx.save_for_backward(shard, weight)
        return out

    @staticmethod
    def backward(ctx, g):
        shard, weight = ctx.saved_tensors
        ref, dtype = ctx.ref, g.dtype
        work = None
        if ref.full is None:  # the first of the linears sharing the input: re-gather it
            ref.full, work = _start_gather_seq(shard, ref.group)
        w = weight.to(dtype)
        grad_x = (g @ w).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        if work is not None:  # overlapped with the input-gradient matmul
            work.wait()
            ref.full = _finish_gather_seq(ref.full, shard, ref.group)
        x2d = ref.full.reshape(-1, ref.full.shape[-1])
        g2d = g.reshape(-1, g.shape[-1])
        grad_w = (g2d.t() @ x2d).to(weight.dtype) if ctx.needs_input_grad[1] else None
        grad_b = g2d.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        ref.uses -= 1
        if ref.uses == 0:
            ref.full = None  # every linear sharing it is done
        return grad_x, grad_w, grad_b, None


def _start_gather_seq(x, group):
    group_size = dist.get_world_size(group)
    x = x.contiguous()
    buf = x.new_empty((group_size * x.shape[0], *x.shape[1:]))
    return buf, all_gather_single(buf, x, group=group, async_op=True)


def _finish_gather_seq(buf, x, group):
    group_size = dist.get_world_size(group)
    shape = list(x.shape)
    shape[1] *= group_size
    return packing.unpack_dim_chunks(buf, 1, group_size, [shape])[0]


def copy_to_tp_region(x, group):
    return _CopyToTP.apply(x, group)


def reduce_from_tp_region(x, group):
    return _ReduceFromTP.apply(x, group)


def gather_from_sp_region(x, group):
    """All-gather the sequence; the result carries its shard (``_sp_shard``) so that
    column-parallel linears reading it keep only the shard for backward."""
    full = _GatherSeq.apply(x, group)
    if full.requires_grad:
        full._sp_shard = _SeqShard(x, group)
    return full


def reduce_scatter_to_sp_region(x, group):
    return _ReduceScatterSeq.apply(x, group)


# ---------------------------------------------------------------------------- modules


def _slice_param(p: torch.Tensor, dim: int, start: int, length: int, pad_to: int | None = None):
    full = p.detach()
    size = full.shape[dim]
    stop = min(start + length, size)
    piece = full.narrow(dim, start, max(0, stop - start)).clone()
    if piece.shape[dim] < length:  # vocabulary padding
        pad_shape = list(piece.shape)
        pad_shape[dim] = length - piece.shape[dim]
        piece = torch.cat([piece, piece.new_zeros(pad_shape)], dim=dim)
    out = nn.Parameter(piece, requires_grad=p.requires_grad)
    out._src = (dim, start, length)
    return out


class ColumnLinear(nn.Module):
    """Output features ``[start, start+length)`` of a linear layer (plain local matmul)."""

    def __init__(self, lin: nn.Linear, start: int, length: int) -> None:
        super().__init__()
        self.weight = _slice_param(lin.weight, 0, start, length)
        self.bias = None if lin.bias is None else _slice_param(lin.bias, 0, start, length)

    def forward(self, x):
        ref = getattr(x, "_sp_shard", None)
        if ref is not None and torch.is_grad_enabled():
            return _ShardSavingLinear.apply(x, self.weight, self.bias, ref)
        return F.linear(x, self.weight, self.bias)


class RowLinear(nn.Module):
    """Input features ``[start, start+length)``; the partial output is reduced over tp
    (all-reduce, or reduce-scatter over the sequence under Megatron-SP), then the bias added."""

    def __init__(self, lin: nn.Linear, start: int, length: int, group, seq_parallel: bool) -> None:
        super().__init__()
        self.weight = _slice_param(lin.weight, 1, start, length)
        self.bias = lin.bias
        self.group, self.seq_parallel = group, seq_parallel

    def forward(self, x):
        y = F.linear(x, self.weight)
        y = (reduce_scatter_to_sp_region if self.seq_parallel else reduce_from_tp_region)(y, self.group)
        return y if self.bias is None else y + self.bias


class InputOp(nn.Module):
    """Applies the tp input operator (f, or the sequence all-gather) to the first argument
    (and to ``memory`` for cross-attention) before the wrapped module."""

    def __init__(self, inner: nn.Module, group, seq_parallel: bool) -> None:
        super().__init__()
        self.inner, self.group, self.seq_parallel = inner, group, seq_parallel

    def _op(self, x):
        return (gather_from_sp_region if self.seq_parallel else copy_to_tp_region)(x, self.group)

    def forward(self, x, *args, **kwargs):
        if kwargs.get("memory") is not None:
            kwargs["memory"] = self._op(kwargs["memory"])
        if len(args) > 1 and args[1] is not None:  # Attention(x, padding_mask, memory)
            args = (args[0], self._op(args[1]), *args[2:])
        x = self._op(x)
        out = self.inner(x, *args, **kwargs)
        for t in (x, kwargs.get("memory"), *args[1:2]):  # the block's forward is done: the
            ref = getattr(t, "_sp_shard", None)          # linears saved what they need; hold
            if ref is not None:                          # nothing a checkpoint would drop
                ref.shard, ref.cast = None, {}
        return out


_COLUMN = {"attn": ("q_proj", "k_proj", "v_proj"), "mlp": ("fc_in", "gate_proj", "up_proj")}
_ROW = {"attn": ("o_proj",), "mlp": ("fc_out", "down_proj")}


def _kind(m: nn.Module) -> str | None:
    if all(hasattr(m, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return "attn"
    if hasattr(m, "fc_in") and hasattr(m, "fc_out"):
        return "mlp"
    if all(hasattr(m, a) for a in ("gate_proj", "up_proj", "down_proj")):
        return "mlp"
    return None


def find_blocks(layer: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(parent, attribute, module, kind) of every attention / MLP module in ``layer``."""
    out = []
    for name, m in layer.named_modules():
        kind = _kind(m)
        if kind is None or not name:
            continue
        parent_name, _, attr = name.rpartition(".")
        out.append((layer.get_submodule(parent_name), attr, m, kind))
    return out


def set_head_start(attn: nn.Module, start: int) -> None:
    """Models with per-head biases (T5, Swin) read ``attn.head_start`` in ``core``."""
    attn.head_start = start


def apply_tp(layer: nn.Module, tp: int, t: int, group, seq_parallel: bool) -> None:
    """Shard one layer's attention and MLP modules for tp rank ``t`` of ``tp`` (in place)."""
    if tp == 1:
        return
    for parent, attr, m, kind in find_blocks(layer):
        if kind == "attn":
            hd = m.head_dim
            heads = m.q_proj.out_features // hd
            set_head_start(m, getattr(m, "head_start", 0) + t * heads // tp)
            rb = getattr(m, "rel_bias", None)  # per-head bias table (T5, Swin), not sliced:
            rb = getattr(rb, "weight", rb)     # each rank's gradient covers its heads only
            if isinstance(rb, torch.Tensor):
                rb._tp_partial = True
        for name in _COLUMN[kind]:
            lin = getattr(m, name, None)
            if lin is not None:
                per = lin.out_features // tp
                setattr(m, name, ColumnLinear(lin, t * per, per))
        for name in _ROW[kind]:
            lin = getattr(m, name, None)
            if lin is not None:
                per = lin.in_features // tp
                setattr(m, name, RowLinear(lin, t * per, per, group, seq_parallel))
        setattr(parent, attr, InputOp(m, group, seq_parallel))
    if seq_parallel:
        for p in layer.parameters():
            if not hasattr(p, "_src"):
                p._tp_partial = True


# ---------------------------------------------------------------------------- vocabulary


def padded_vocab(vocab: int, tp: int) -> int:
    return -(-vocab // tp) * tp


class VocabEmbedding(nn.Module):
    """Rows ``[start, start+per)`` of an embedding table; output all-reduced over tp."""

    def __init__(self, emb: nn.Embedding, tp: int, t: int, group, weight=None) -> None:
        super().__init__()
        per = padded_vocab(emb.num_embeddings, tp) // tp
        self.start, self.per, self.group, self.tp = t * per, per, group, tp
        self.weight = weight if weight is not None else _slice_param(emb.weight, 0, t * per, per)

    def forward(self, ids):
        if self.tp == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        inside = (local >= 0) & (local < self.per)
        out = F.embedding(local.clamp(0, self.per - 1), self.weight) * inside.unsqueeze(-1)
        return reduce_from_tp_region(out, self.group)


class VocabHead(nn.Module):
    """Vocabulary rows ``[start, start+per)`` of the LM head (column-parallel, input op f);
    padded columns are masked to ``-inf``."""

    def __init__(self, lin: nn.Linear, tp: int, t: int, group, weight=None) -> None:
        super().__init__()
        self.vocab = lin.out_features
        per = padded_vocab(self.vocab, tp) // tp
        self.start, self.per, self.group, self.tp = t * per, per, group, tp
        self.weight = weight if weight is not None else _slice_param(lin.weight, 0, t * per, per)
        self.bias = None if lin.bias is None else _slice_param(lin.bias, 0, t * per, per)

    def forward(self, x):
        if self.tp > 1:
            x = copy_to_tp_region(x, self.group)
        y = F.linear(x, self.weight, self.bias)
        valid = self.vocab - self.start
        if valid < self.per:
            keep = torch.arange(self.per, device=y.device) < valid
            y = y.masked_fill(~keep, float("-inf"))
        return y


class _VocabCE(torch.autograd.Function):
    """Per-token cross-entropy of vocabulary-sharded logits ``[N, per]`` (fp32)."""

    @staticmethod
    def forward(ctx, logits, target, start, group):
        mx = logits.max(dim=-1).values
        with region("tp_comm"):
            dist.all_reduce(mx, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - mx.unsqueeze(-1)
        exp = shifted.exp()
        sumexp = exp.sum(-1)
        with region("tp_comm"):
            dist.all_reduce(sumexp, group=group)
        local = target - start
        inside = (local >= 0) & (local < logits.shape[-1])
        idx = local.clamp(0, logits.shape[-1] - 1)
        tgt = shifted.gather(-1, idx.unsqueeze(-1)).squeeze(-1) * inside
        with region("tp_comm"):
            dist.all_reduce(tgt, group=group)
        loss = sumexp.log() - tgt
        ctx.save_for_backward(exp / sumexp.unsqueeze(-1), idx, inside)
        return loss

    @staticmethod
    def backward(ctx, g):
        softmax, idx, inside = ctx.saved_tensors
        grad = softmax * g.unsqueeze(-1)
        grad.scatter_add_(-1, idx.unsqueeze(-1), (-g * inside).unsqueeze(-1))
        return grad, None, None, None


def vocab_parallel_loss_sum(logits, labels, head: VocabHead, ignore_index: int = -100):
    """Sum of token cross-entropies (labels already shifted, ``ignore_index`` skipped)."""
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    valid = labels != ignore_index
    if head.tp == 1:
        return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    tok = _VocabCE.apply(logits, labels.clamp(min=0), head.start, head.group)
    return (tok * valid).sum()
