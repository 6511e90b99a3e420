"""Packing kernels around collectives (C++ `csrc/comm`): Ulysses pack/unpack and split/gather re-layouts.

Two primitives, mutual inverses (and, being permutations, mutual adjoints):

- ``pack_dim_chunks(tensors, dim, n)`` -> ``buf`` of shape ``[n, c]``: row ``i`` is the
  concatenation over ``k`` of chunk ``i`` of ``tensors[k]`` along ``dim`` (made contiguous).
  Row ``i`` is what one ``all_to_all_single`` with equal splits sends to rank ``i``.
- ``unpack_dim_chunks(buf, dim, n, shapes)`` -> tensors of ``shapes``: the inverse. After an
  all-to-all, row ``i`` of ``buf`` came from rank ``i``, so each output is the concatenation
  along ``dim`` of what the ranks sent, in rank order.

``split_dim_to_chunks`` / ``chunks_to_dim`` are the one-tensor forms (``[n, *chunk_shape]``).
Every ``shapes`` argument gives the shapes of the tensors a function *returns*.

Ulysses with sp degree ``P`` on ``[b, s, H, d]`` activations (``sl = s / P``; k/v may have
fewer heads than q (GQA) and v its own head size)::

    before attention: send = ulysses_pack_qkv(q, k, v, P)       # [P, c], row j: heads of rank j
                      recv = all_to_all_single(send)            # row i: sequence chunk i
                      q, k, v = ulysses_unpack_qkv(recv, P, q_shape, k_shape, v_shape)
                      # q: [b, s, Hq/P, d] ...  (shapes given are these output shapes)
    after attention:  send = ulysses_pack_out(o, P)             # o [b, s, H/P, d]; row j: seq chunk j
                      recv = all_to_all_single(send)            # row i: head group i
                      o = ulysses_unpack_out(recv, P, o_shape)  # [b, sl, H, d]

Redistribution between layers with different layouts uses the same two primitives
(``x`` local, group of size ``P``; ``dim``/``dim2`` tensor dims):

- gather ``dim`` (sharded over the group): ``g = all_gather_into_tensor(x)`` is ``[P][x]``,
  i.e. already packed: ``full = unpack_dim_chunks(g, dim, P, [full_shape])[0]``.
- sharded on ``dim`` -> sharded on ``dim2`` (all-to-all, Ulysses is the case heads/seq):
  ``send = pack_dim_chunks([x], dim2, P)``; ``recv = all_to_all_single(send)``;
  ``y = unpack_dim_chunks(recv, dim, P, [y_shape])[0]``.
- reduce-scatter along ``dim``: ``reduce_scatter_tensor`` of ``pack_dim_chunks([x], dim, P)``.
- shard ``dim`` over a finer group (P2 = m * P1): a local ``split_dim_to_chunks(x, dim, m)[i]``.

Buffer layouts (C++ header ``csrc/comm/layout.h`` is the reference):
``ulysses_pack_qkv``: ``[P (dest rank j = head group j)][q, k, v][b, sl, H_k/P, d_k]``;
``ulysses_pack_out``: ``[P (dest rank j = sequence chunk j)][b, sl, H/P, d]``.

Autograd: all functions here are plain (no autograd graph; inputs are read through
``.detach()``), except ``pack_dim_chunks_autograd`` / ``unpack_dim_chunks_autograd``, the
generic pair wrapped in ``torch.autograd.Function``s. Backward pairs, each backward being the
other function with the same ``dim``/``n`` (shapes = the forward's input shapes):

==========================  ======================================================
forward                     backward (of the gradient)
==========================  ======================================================
pack_dim_chunks(xs, d, n)   unpack_dim_chunks(g, d, n, [x.shape for x in xs])
unpack_dim_chunks(b, d, n)  pack_dim_chunks(grads, d, n)
ulysses_pack_qkv            unpack_dim_chunks(g, head_dim, P, [q, k, v shapes])
ulysses_unpack_qkv          pack_dim_chunks([dq, dk, dv], seq_dim, P)
ulysses_pack_out            unpack_dim_chunks(g, seq_dim, P, [o.shape])
ulysses_unpack_out          pack_dim_chunks([do], head_dim, P)
==========================  ======================================================

Backends: CPU tensors use the C++ kernel (``galvatron._C``; multi-threaded above ~1 MiB per
thread), CUDA tensors the CUDA kernel when ``_C.with_cuda``, anything else the ``reference_*``
torch expressions. Element types are opaque bytes (1, 2, 4 or 8 bytes; bf16/fp16 move as
int16), so results are bit-exact for every dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from galvatron import _C

__all__ = [
    "chunks_to_dim",
    "pack_dim_chunks",
    "pack_dim_chunks_autograd",
    "reference_chunks_to_dim",
    "reference_pack_dim_chunks",
    "reference_split_dim_to_chunks",
    "reference_ulysses_pack_out",
    "reference_ulysses_pack_qkv",
    "reference_ulysses_unpack_out",
    "reference_ulysses_unpack_qkv",
    "reference_unpack_dim_chunks",
    "split_dim_to_chunks",
    "ulysses_pack_out",
    "ulysses_pack_qkv",
    "ulysses_unpack_out",
    "ulysses_unpack_qkv",
    "unpack_dim_chunks",
    "unpack_dim_chunks_autograd",
]

_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
Shape = Sequence[int]


# ---- validation -------------------------------------------------------------------------------


def _check_n(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")
    return n


def _norm_dim(dim: int, ndim: int, name: str) -> int:
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim={dim} is out of range for {name} with {ndim} dimension(s)")
    return dim % ndim


def _check_divisible(shape: Shape, dim: int, n: int, n_name: str, name: str) -> None:
    if shape[dim] % n != 0:
        raise ValueError(
            f"{name} has shape {tuple(shape)}: size {shape[dim]} of dim {dim} is not divisible "
            f"by {n_name}={n}"
        )


def _check_tensors(tensors: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    if len(tensors) == 0:
        raise ValueError("tensors must not be empty")
    for t, name in zip(tensors, names, strict=True):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    first = tensors[0]
    dtype, device = first.dtype, (first.device if len(tensors) > 1 else None)
    for t, name in zip(tensors, names, strict=True):
        if t.dtype != dtype:
            raise ValueError(
                f"{name} has dtype {t.dtype}, {names[0]} has {dtype}: dtypes must match"
            )
        if device is not None and t.device != device:
            raise ValueError(f"{name} is on {t.device}, {names[0]} on {device}: devices must match")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (got strides {t.stride()})")
        if t.ndim == 0:
            raise ValueError(f"{name} must have at least one dimension")


def _out_shapes(shapes: Sequence[Shape], names: Sequence[str]) -> list[list[int]]:
    out = []
    for shape, name in zip(shapes, names, strict=True):
        shape = [int(x) for x in shape]
        if len(shape) == 0 or any(x < 0 for x in shape):
            raise ValueError(f"{name} must be a non-empty shape of sizes >= 0, got {shape}")
        out.append(shape)
    return out


# ---- backends -------------------------------------------------------------------------------


def _kernel_kind(t: torch.Tensor) -> str:
    if _is_fake(t):  # shapes without data (galvatron check --fake): allocate, copy nothing
        return "fake"
    if t.element_size() not in _INT_OF_SIZE:
        return "torch"
    if t.device.type == "cpu":
        return "cpu"
    if t.device.type == "cuda" and _C.with_cuda:
        return "cuda"
    return "torch"


def _is_fake(t: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return isinstance(t, FakeTensor)


def _np_bytes(t: torch.Tensor):
    """numpy view of a contiguous tensor's elements as same-size integers (no copy)."""
    if t.requires_grad:
        t = t.detach()
    return t.view(_INT_OF_SIZE[t.element_size()]).numpy()


def _threads(num_threads: int | None) -> int:
    return torch.get_num_threads() if num_threads is None else max(1, int(num_threads))


def _check_dst(dst, like: torch.Tensor, shape: Sequence[int], name: str) -> torch.Tensor:
    """A caller-provided output: a contiguous tensor like ``like`` with ``prod(shape)`` elements."""
    _check_tensors([like, dst], ["input", name])
    if dst.numel() != math.prod(shape):
        raise ValueError(f"{name} holds {dst.numel()} elements, needs {math.prod(shape)}")
    return dst.view(*shape)


def _pack(tensors, dim, n, num_threads, dst) -> torch.Tensor:
    shapes = [list(t.shape) for t in tensors]
    total = sum(t.numel() for t in tensors)
    first = tensors[0]
    if dst is None:
        buf = torch.empty((n, total // n), dtype=first.dtype, device=first.device)
    else:
        buf = _check_dst(dst, first, (n, total // n), "dst")
    kind = _kernel_kind(first)
    if kind == "fake":
        return buf
    if kind == "torch":
        return buf.copy_(reference_pack_dim_chunks(tensors, dim, n))
    if kind == "cpu":
        _C.split_dim_to_chunks(
            [_np_bytes(t) for t in tensors], _np_bytes(buf), shapes, dim, n, _threads(num_threads)
        )
    else:
        with torch.cuda.device(first.device):
            stream = torch.cuda.current_stream(first.device).cuda_stream
            srcs = [t.data_ptr() for t in tensors]
            size = first.element_size()
            _C.cuda_split_dim_to_chunks(srcs, buf.data_ptr(), shapes, dim, n, size, stream)
    return buf


def _unpack(buf, dim, n, shapes, num_threads, dsts) -> list[torch.Tensor]:
    if dsts is None:
        outs = [torch.empty(s, dtype=buf.dtype, device=buf.device) for s in shapes]
    else:
        if len(dsts) != len(shapes):
            raise ValueError(f"dsts has {len(dsts)} tensors, shapes {len(shapes)}")
        pairs = enumerate(zip(dsts, shapes, strict=True))
        outs = [_check_dst(o, buf, s, f"dsts[{i}]") for i, (o, s) in pairs]
    kind = _kernel_kind(buf)
    if kind == "fake":
        return outs
    if kind == "torch":
        for o, r in zip(outs, reference_unpack_dim_chunks(buf, dim, n, shapes), strict=True):
            o.copy_(r)
    elif kind == "cpu":
        _C.chunks_to_dim(
            _np_bytes(buf), [_np_bytes(o) for o in outs], shapes, dim, n, _threads(num_threads)
        )
    else:
        with torch.cuda.device(buf.device):
            stream = torch.cuda.current_stream(buf.device).cuda_stream
            ptrs = [o.data_ptr() for o in outs]
            size = buf.element_size()
            _C.cuda_chunks_to_dim(buf.data_ptr(), ptrs, shapes, dim, n, size, stream)
    return outs


# ---- generic primitives ---------------------------------------------------------------------


def pack_dim_chunks(
    tensors: Sequence[torch.Tensor],
    dim: int,
    n: int,
    *,
    names: Sequence[str] | None = None,
    num_threads: int | None = None,
    dst: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[n, c]`` buffer whose row ``i`` is chunk ``i`` along ``dim`` of every tensor, in order.

    Tensors: contiguous, same dtype and device, ``shape[dim] % n == 0``. ``dim`` may be negative
    (then per tensor). ``names`` name the tensors in error messages; ``num_threads`` caps the
    CPU kernel's threads (default ``torch.get_num_threads()``); ``dst`` is an optional
    preallocated contiguous output with ``n * c`` elements (returned as its ``[n, c]`` view),
    e.g. a send buffer reused across layers. Outputs must not overlap the inputs.
    """
    names = list(names) if names is not None else [f"tensors[{i}]" for i in range(len(tensors))]
    return _checked_pack(tensors, dim, n, names, "n", num_threads, dst)


def unpack_dim_chunks(
    buf: torch.Tensor,
    dim: int,
    n: int,
    shapes: Sequence[Shape],
    *,
    names: Sequence[str] | None = None,
    num_threads: int | None = None,
    dsts: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Inverse of :func:`pack_dim_chunks`: tensors of ``shapes`` from a contiguous ``buf``.

    ``buf`` must hold ``sum(prod(shape))`` elements (any shape, e.g. ``[n, c]`` or flat).
    ``dsts``: optional preallocated contiguous outputs, one per shape (returned as views of
    those shapes).
    """
    names = list(names) if names is not None else [f"shapes[{i}]" for i in range(len(shapes))]
    return _checked_unpack(buf, dim, n, shapes, names, "n", num_threads, dsts)


def _checked_pack(tensors, dim, n, names, n_name, num_threads, dst=None) -> torch.Tensor:
    _check_n(n, n_name)
    _check_tensors(tensors, names)
    dims = {_norm_dim(dim, t.ndim, name) for t, name in zip(tensors, names, strict=True)}
    if len(dims) != 1:
        raise ValueError(f"dim={dim} names different dimensions of tensors of different ranks")
    d = dims.pop()
    for t, name in zip(tensors, names, strict=True):
        _check_divisible(t.shape, d, n, n_name, name)
    return _pack(list(tensors), d, n, num_threads, dst)


def _checked_unpack(
    buf, dim, n, shapes, names, n_name, num_threads, dsts=None
) -> list[torch.Tensor]:
    _check_n(n, n_name)
    _check_tensors([buf], ["buf"])
    if len(shapes) == 0:
        raise ValueError("shapes must not be empty")
    out_shapes = _out_shapes(shapes, names)
    dims = {_norm_dim(dim, len(s), name) for s, name in zip(out_shapes, names, strict=True)}
    if len(dims) != 1:
        raise ValueError(f"dim={dim} names different dimensions of shapes of different ranks")
    d = dims.pop()
    for s, name in zip(out_shapes, names, strict=True):
        _check_divisible(s, d, n, n_name, name)
    total = sum(math.prod(s) for s in out_shapes)
    if buf.numel() != total:
        raise ValueError(f"buf holds {buf.numel()} elements, shapes {out_shapes} need {total}")
    return _unpack(buf, d, n, out_shapes, num_threads, dsts)


def split_dim_to_chunks(
    t: torch.Tensor, dim: int, n: int, *, num_threads: int | None = None
) -> torch.Tensor:
    """``[n, *chunk_shape]``: chunk ``i`` of ``t`` along ``dim`` made contiguous as row ``i``."""
    _check_tensors([t], ["t"])
    d = _norm_dim(dim, t.ndim, "t")
    chunk_shape = list(t.shape)
    _check_n(n, "n")
    _check_divisible(chunk_shape, d, n, "n", "t")
    chunk_shape[d] //= n
    return pack_dim_chunks([t], d, n, names=["t"], num_threads=num_threads).view(n, *chunk_shape)


def chunks_to_dim(
    t: torch.Tensor, dim: int, n: int, *, num_threads: int | None = None
) -> torch.Tensor:
    """Inverse of :func:`split_dim_to_chunks`: ``t`` is ``[n, *chunk_shape]``; the chunks are
    concatenated along ``dim`` of the chunk shape (``dim`` counts dims of the result)."""
    _check_n(n, "n")
    _check_tensors([t], ["t"])
    if t.ndim < 2 or t.shape[0] != n:
        raise ValueError(f"t must have shape [n={n}, *chunk_shape], got {tuple(t.shape)}")
    shape = list(t.shape[1:])
    d = _norm_dim(dim, len(shape), "t's chunks")
    shape[d] *= n
    return unpack_dim_chunks(t, d, n, [shape], names=["t"], num_threads=num_threads)[0]


# ---- Ulysses --------------------------------------------------------------------------------


def ulysses_pack_qkv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    world: int,
    *,
    head_dim: int = 2,
    num_threads: int | None = None,
    dst: torch.Tensor | None = None,
) -> torch.Tensor:
    """Send buffer ``[world, c]`` of local ``[b, s/P, H, d]`` q, k, v: row ``j`` = heads
    ``j*H/P:(j+1)*H/P`` of q, then of k, then of v, each ``[b, s/P, H/P, d]`` contiguous."""
    names = ["q", "k", "v"]
    return _checked_pack([q, k, v], head_dim, world, names, "world", num_threads, dst)


def ulysses_unpack_qkv(
    buf: torch.Tensor,
    world: int,
    q_shape: Shape,
    k_shape: Shape,
    v_shape: Shape,
    *,
    seq_dim: int = 1,
    num_threads: int | None = None,
    dsts: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v ``[b, s, H/P, d]`` (the given output shapes) from the all-to-all's receive
    buffer, whose row ``i`` holds sequence chunk ``i`` of q, k, v (as packed by rank ``i``)."""
    names = ["q_shape", "k_shape", "v_shape"]
    shapes = [q_shape, k_shape, v_shape]
    q2, k2, v2 = _checked_unpack(buf, seq_dim, world, shapes, names, "world", num_threads, dsts)
    return q2, k2, v2


def ulysses_pack_out(
    out: torch.Tensor,
    world: int,
    *,
    seq_dim: int = 1,
    num_threads: int | None = None,
    dst: torch.Tensor | None = None,
) -> torch.Tensor:
    """Send buffer ``[world, c]`` of the attention output ``[b, s, H/P, d]``: row ``j`` is
    sequence chunk ``j`` (``[b, s/P, H/P, d]``), for rank ``j``."""
    return _checked_pack([out], seq_dim, world, ["out"], "world", num_threads, dst)


def ulysses_unpack_out(
    buf: torch.Tensor,
    world: int,
    out_shape: Shape,
    *,
    head_dim: int = 2,
    num_threads: int | None = None,
    dst: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention output ``[b, s/P, H, d]`` (``out_shape``) from the receive buffer whose row
    ``i`` holds head group ``i``."""
    dsts = None if dst is None else [dst]
    names = ["out_shape"]
    outs = _checked_unpack(buf, head_dim, world, [out_shape], names, "world", num_threads, dsts)
    return outs[0]


# ---- autograd ----------------------------------------------------------------------------------


class _PackDimChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dim: int, n: int, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.dim, ctx.n = dim, n
        ctx.shapes = [tuple(t.shape) for t in tensors]
        return pack_dim_chunks(tensors, dim, n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grads = unpack_dim_chunks(grad.contiguous(), ctx.dim, ctx.n, ctx.shapes)
        return (None, None, *grads)


class _UnpackDimChunks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, buf: torch.Tensor, dim: int, n: int, shapes) -> tuple[torch.Tensor, ...]:
        ctx.dim, ctx.n, ctx.buf_shape = dim, n, tuple(buf.shape)
        ctx.shapes_for_backward = shapes
        return tuple(unpack_dim_chunks(buf, dim, n, shapes))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        like = next(g for g in grads if g is not None)
        grads = [
            g.contiguous() if g is not None else like.new_zeros(shape)
            for g, shape in zip(grads, ctx.shapes_for_backward, strict=True)
        ]
        return pack_dim_chunks(grads, ctx.dim, ctx.n).view(ctx.buf_shape), None, None, None


def pack_dim_chunks_autograd(tensors: Sequence[torch.Tensor], dim: int, n: int) -> torch.Tensor:
    """:func:`pack_dim_chunks` recorded by autograd (backward: :func:`unpack_dim_chunks`)."""
    return _PackDimChunks.apply(dim, n, *tensors)


def unpack_dim_chunks_autograd(
    buf: torch.Tensor, dim: int, n: int, shapes: Sequence[Shape]
) -> tuple[torch.Tensor, ...]:
    """:func:`unpack_dim_chunks` recorded by autograd (backward: :func:`pack_dim_chunks`)."""
    return _UnpackDimChunks.apply(buf, dim, n, [tuple(s) for s in shapes])


# ---- torch-expression references (tests, benchmarks, fallback for other devices) -----------


def reference_pack_dim_chunks(tensors: Sequence[torch.Tensor], dim: int, n: int) -> torch.Tensor:
    """``torch.cat`` of each tensor's ``unflatten(dim, (n, -1)).movedim(dim, 0)`` rows."""
    rows = []
    for t in tensors:
        d = dim % t.ndim
        rows.append(t.unflatten(d, (n, t.shape[d] // n)).movedim(d, 0).reshape(n, -1))
    return torch.cat(rows, dim=1)


def reference_unpack_dim_chunks(
    buf: torch.Tensor, dim: int, n: int, shapes: Sequence[Shape]
) -> list[torch.Tensor]:
    """Slice each tensor's columns out of ``buf`` and ``torch.cat`` its ``n`` chunks along dim."""
    total = sum(math.prod(s) for s in shapes)
    rows = buf.reshape(n, total // n)
    outs, offset = [], 0
    for shape in shapes:
        d = dim % len(shape)
        chunk_shape = list(shape)
        chunk_shape[d] //= n
        size = math.prod(chunk_shape)
        chunks = rows[:, offset : offset + size].reshape(n, *chunk_shape)
        outs.append(torch.cat(list(chunks.unbind(0)), dim=d))
        offset += size
    return outs


def reference_split_dim_to_chunks(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """``torch.stack`` of ``t.chunk(n, dim)``."""
    return torch.stack(t.chunk(n, dim))


def reference_chunks_to_dim(t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """``torch.cat`` of ``t.unbind(0)`` along ``dim``."""
    return torch.cat(list(t.unbind(0)), dim=dim)


def reference_ulysses_pack_qkv(q, k, v, world: int, *, head_dim: int = 2) -> torch.Tensor:
    return reference_pack_dim_chunks([q, k, v], head_dim, world)


def reference_ulysses_unpack_qkv(buf, world: int, q_shape, k_shape, v_shape, *, seq_dim: int = 1):
    return tuple(reference_unpack_dim_chunks(buf, seq_dim, world, [q_shape, k_shape, v_shape]))


def reference_ulysses_pack_out(out, world: int, *, seq_dim: int = 1) -> torch.Tensor:
    return reference_pack_dim_chunks([out], seq_dim, world)


def reference_ulysses_unpack_out(buf, world: int, out_shape, *, head_dim: int = 2) -> torch.Tensor:
    return reference_unpack_dim_chunks(buf, head_dim, world, [out_shape])[0]
