"""Plan-independent view of a rank's training state, for checkpoints that reshard.

Every tensor a rank holds (a parameter, an AdamW moment, a ZeRO-1 flat shard of moments) is
described by :class:`Segment` s: which *logical* tensor of the single-process model it holds
(parameter name and kind: ``param``, ``exp_avg``, ``exp_avg_sq`` or ``step``) and where its
values sit inside it. The geometry has two levels, which cover every layout the runtime makes:

- the tensor-parallel slice ``src = (dim, start, length)`` of the full tensor (None: whole),
  whose *tp-local* tensor has shape ``shape`` (vocabulary slices may run past the end of the
  full tensor: padding, zero and never saved);
- a flat range ``[a, b)`` of the tp-local tensor flattened in row-major order (FSDP2's dim-0
  shards and ZeRO-1's flat shards are flat ranges), stored at ``off`` of the saved tensor.

:func:`local_state` lists this rank's tensors with their segments; :func:`restore` fills a
(possibly differently planned) model from the saved tensors of any plan and world size:
where a saved segment has exactly the needed geometry it is copied directly, otherwise the
full logical tensor is assembled from the saved pieces and sliced. Values are copied, never
recomputed, so a resharded resume continues with the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

KINDS = ("param", "exp_avg", "exp_avg_sq", "step")


@dataclass(frozen=True)
class Segment:
    name: str  # parameter name in the single-process model
    kind: str  # one of KINDS
    src: tuple[int, int, int] | None  # tp slice (dim, start, length) of the full tensor
    shape: tuple[int, ...]  # tp-local shape
    a: int  # flat range [a, b) of the tp-local tensor
    b: int
    off: int  # where the range starts in the flattened saved tensor

    def geometry(self) -> tuple:
        return (self.name, self.kind, self.src, self.shape, self.a, self.b)

    def to_list(self) -> list:
        return [self.name, self.kind, None if self.src is None else list(self.src), list(self.shape),
                self.a, self.b, self.off]

    @staticmethod
    def from_list(x: list) -> Segment:
        name, kind, src, shape, a, b, off = x
        return Segment(str(name), str(kind), None if src is None else tuple(int(v) for v in src),
                       tuple(int(v) for v in shape), int(a), int(b), int(off))


@dataclass
class Entry:
    """One tensor of this rank: its checkpoint key, the local tensor, its segments."""

    key: str
    tensor: torch.Tensor
    segments: list[Segment]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _flat_range(p: torch.Tensor) -> tuple[int, int]:
    """The flat range of the tp-local tensor that this rank's local part of ``p`` holds."""
    if not hasattr(p, "to_local"):
        return 0, p.numel()
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    if any(not isinstance(pl, Shard) or pl.dim != 0 for pl in p.placements):
        raise NotImplementedError(f"checkpoint: DTensor placements {p.placements} (only Shard(0))")
    local_shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    row = math.prod(p.shape[1:]) if p.dim() > 1 else 1
    a = int(offset[0]) * row if p.dim() else 0
    return a, a + math.prod(local_shape)


def _whole(p, m, kind: str, off: int = 0) -> Segment:
    a, b = _flat_range(p)
    return Segment(m.name, kind, m.src, tuple(p.shape), a, b, off)


def local_state(pm) -> list[Entry]:
    """Everything this rank must save (parameters and optimizer state), in a fixed order."""
    import torch.distributed as dist

    r = dist.get_rank()
    metas = pm.unique_params()
    by_id = {id(p): m for p, m in metas}
    out = [Entry(f"rank{r}/param/{j}", _local(p.detach()), [_whole(p, m, "param")])
           for j, (p, m) in enumerate(metas)]
    opt = pm.optimizer
    if opt.adamw is not None:
        for j, p in enumerate(opt.adamw.param_groups[0]["params"]):
            st = opt.adamw.state.get(p, {})
            m = by_id[id(p)]
            for kind in ("exp_avg", "exp_avg_sq"):
                if kind in st:
                    out.append(Entry(f"rank{r}/adamw/{j}/{kind}", _local(st[kind]), [_whole(p, m, kind)]))
            if "step" in st:
                out.append(Entry(f"rank{r}/adamw/{j}/step", st["step"].reshape(1),
                                 [Segment(m.name, "step", None, (), 0, 1, 0)]))
    if opt.zero1 is not None:
        z = opt.zero1
        for j, shard in enumerate(z.shards):
            st = z.state.get(shard.params[0], {})
            segs = [(by_id[id(p)], p, a, b, off) for p, a, b, off in shard.segments()]
            for kind in ("exp_avg", "exp_avg_sq"):
                if kind in st:
                    out.append(Entry(f"rank{r}/zero1/{j}/{kind}", st[kind],
                                     [Segment(m.name, kind, m.src, tuple(p.shape), a, b, off)
                                      for m, p, a, b, off in segs]))
            if "step" in st:
                out.append(Entry(f"rank{r}/zero1/{j}/step", st["step"].reshape(1),
                                 [Segment(m.name, "step", None, (), 0, 1, 0)
                                  for m, *_ in segs]))
    return out


# ---------------------------------------------------------------------------- validation


def _int_list(x, where: str, n: int | None = None, lo: int = 0) -> tuple[int, ...]:
    if (not isinstance(x, list) or len(x) > 8 or (n is not None and len(x) != n)
            or any(type(v) is not int or v < lo for v in x)):
        raise ValueError(f"{where}: expected a list of {'' if n is None else f'{n} '}integers >= {lo}, "
                         f"got {x!r:.80}")
    return tuple(x)


def _check_segment(x, shapes: dict[str, tuple[int, ...]], numel: int, where: str) -> Segment:
    if not isinstance(x, list) or len(x) != 7:
        raise ValueError(f"{where}: expected [name, kind, src, shape, a, b, off]")
    name, kind, src, shape, a, b, off = x
    if name not in shapes:
        raise ValueError(f"{where}: parameter {name!r:.80} is not in the layout's shapes")
    if kind not in KINDS:
        raise ValueError(f"{where}: kind {kind!r:.40} is not one of {', '.join(KINDS)}")
    full = shapes[name]
    shape = _int_list(shape, f"{where}.shape")
    a, b, off = _int_list([a, b, off], f"{where}.a/b/off")
    if kind == "step":
        if src is not None or shape != () or (a, b) != (0, 1):
            raise ValueError(f"{where}: a step count is one value without a slice")
    elif src is None:
        if shape != full:
            raise ValueError(f"{where}: shape {list(shape)} is not the parameter's {list(full)}")
    else:
        dim, start, length = _int_list(src, f"{where}.src", 3)
        if (dim >= len(full) or length < 1 or len(shape) != len(full) or shape[dim] != length
                or start >= full[dim] or any(s != f for i, (s, f) in enumerate(zip(shape, full, strict=True))
                                             if i != dim)):
            raise ValueError(f"{where}: slice {list(src)} of shape {list(shape)} does not fit {list(full)}")
    if not a <= b <= math.prod(shape) or off + (b - a) > numel:
        raise ValueError(f"{where}: range [{a}, {b}) at {off} lies outside the tensor")
    return Segment(name, kind, None if src is None else tuple(src), shape, a, b, off)


def validate_layout(layout, tensors: dict[str, dict], model_shapes: dict[str, tuple[int, ...]],
                    where: str) -> tuple[dict[str, list[Segment]], dict[str, tuple[int, ...]]]:
    """Check a checkpoint's layout (``train_state.json``) against its tensor index (every key
    saved, every range inside its tensor) and this model (every parameter present with its
    shape) before anything is read. Returns (segments per key, logical shapes)."""
    if not isinstance(layout, dict) or layout.get("version") != 1:
        raise ValueError(f"{where}: no version-1 tensor layout (written by an older version?); "
                         "it cannot be loaded")
    if not isinstance(layout.get("shapes"), dict) or not isinstance(layout.get("keys"), dict):
        raise ValueError(f"{where}: layout.shapes and layout.keys must be mappings")
    shapes = {str(k): _int_list(v, f"{where}: layout.shapes[{k!r:.80}]") for k, v in layout["shapes"].items()}
    for name, shape in model_shapes.items():
        if name not in shapes:
            raise ValueError(f"checkpoint: it has no parameter {name!r} (a different model?)")
        if shapes[name] != tuple(shape):
            raise ValueError(f"checkpoint: parameter {name!r} has shape {shapes[name]} "
                             f"in the checkpoint and {tuple(shape)} in the model")
    keys: dict[str, list[Segment]] = {}
    for key, segs in layout["keys"].items():
        t = tensors.get(key)
        if t is None:
            raise ValueError(f"{where}: layout key {key!r:.80} is not a tensor of the checkpoint")
        if not isinstance(segs, list) or not segs:
            raise ValueError(f"{where}: layout.keys[{key!r}] must be a non-empty list of segments")
        if t["dtype"] not in ("float32", "float64", "bfloat16", "float16"):
            raise ValueError(f"{where}: layout key {key!r} is saved as {t['dtype']}; a floating dtype is expected")
        numel = math.prod(t["shape"])
        keys[key] = [_check_segment(x, shapes, numel, f"{where}: layout.keys[{key!r}][{i}]")
                     for i, x in enumerate(segs)]
    return keys, shapes


# ---------------------------------------------------------------------------- restore


@dataclass
class _Target:
    """One place of this rank to fill: ``set(values)`` receives the flat values of ``seg``."""

    seg: Segment
    put: Callable[[torch.Tensor], None]


def _copy_into(t: torch.Tensor, off: int = 0):
    def put(values: torch.Tensor) -> None:
        flat = t.view(-1)
        flat[off:off + values.numel()].copy_(values.to(flat.dtype))
    return put


def _targets(pm) -> list[_Target]:
    """Every place of this rank that a checkpoint fills, creating optimizer state as needed
    (AdamW creates it lazily; states the checkpoint lacks are dropped again)."""
    metas = pm.unique_params()
    by_id = {id(p): m for p, m in metas}
    out = [_Target(_whole(p, m, "param"), _copy_into(_local(p.data))) for p, m in metas]
    opt = pm.optimizer
    if opt.adamw is not None:
        for p in opt.adamw.param_groups[0]["params"]:
            st = opt.adamw.state[p]
            m = by_id[id(p)]
            for kind in ("exp_avg", "exp_avg_sq"):
                st.setdefault(kind, torch.zeros_like(p, memory_format=torch.preserve_format))
                out.append(_Target(_whole(p, m, kind), _copy_into(_local(st[kind]))))
            st.setdefault("step", torch.tensor(0.0))
            out.append(_Target(Segment(m.name, "step", None, (), 0, 1, 0), _copy_into(st["step"])))
    if opt.zero1 is not None:
        z = opt.zero1
        for shard in z.shards:
            st = z.state[shard.params[0]]
            n = shard.hi - shard.lo
            for kind in ("exp_avg", "exp_avg_sq"):
                st.setdefault(kind, torch.zeros(n, dtype=shard.params[0].dtype,
                                                device=shard.params[0].device))
            st.setdefault("step", torch.tensor(0.0))
            for p, a, b, off in shard.segments():
                m = by_id[id(p)]
                for kind in ("exp_avg", "exp_avg_sq"):
                    out.append(_Target(Segment(m.name, kind, m.src, tuple(p.shape), a, b, off),
                                       _copy_into(st[kind], off)))
                out.append(_Target(Segment(m.name, "step", None, (), 0, 1, 0), _copy_into(st["step"])))
    return out


def _regions(full: torch.Tensor, seg: Segment, local: torch.Tensor):
    """The matching views of the full tensor and of a tp-local tensor (padding cut off)."""
    if seg.src is None:
        if tuple(full.shape) != seg.shape:
            raise ValueError(f"{seg.name}: saved shape {seg.shape} does not match {tuple(full.shape)}")
        return full, local
    dim, start, length = seg.src
    k = max(0, min(length, full.shape[dim] - start))
    return full.narrow(dim, start, k), local.narrow(dim, 0, k)


class _Assembled:
    """A full logical tensor put together from saved pieces, with a mask of what is known."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        self.values = torch.zeros(shape, dtype=dtype)
        self.known = torch.zeros(shape, dtype=torch.bool)

    def add(self, seg: Segment, values: torch.Tensor) -> None:
        n = math.prod(seg.shape)
        loc, got = torch.zeros(n, dtype=values.dtype), torch.zeros(n, dtype=torch.bool)
        loc[seg.a:seg.b] = values
        got[seg.a:seg.b] = True
        fv, lv = _regions(self.values, seg, loc.view(seg.shape))
        fk, lk = _regions(self.known, seg, got.view(seg.shape))
        fv.copy_(torch.where(lk, lv, fv))
        fk |= lk

    def take(self, seg: Segment) -> torch.Tensor:
        n = math.prod(seg.shape)
        loc = torch.zeros(seg.shape, dtype=self.values.dtype)
        need, have = torch.zeros(seg.shape, dtype=torch.bool), torch.zeros(seg.shape, dtype=torch.bool)
        fv, lv = _regions(self.values, seg, loc)
        fk, lk = _regions(self.known, seg, have)
        lv.copy_(fv)
        lk.copy_(fk)
        _regions(self.known, seg, need)[1].fill_(True)
        missing = (need & ~have).view(n)[seg.a:seg.b]
        if bool(missing.any()):
            raise ValueError(f"checkpoint: {int(missing.sum())} values of {seg.name} ({seg.kind}) "
                             "are in no saved shard")
        return loc.view(n)[seg.a:seg.b]


def restore(pm, layout: dict[str, list[Segment]], full_shapes: dict[str, tuple[int, ...]],
            read: Callable[[list[str]], dict[str, torch.Tensor]]) -> None:
    """Fill ``pm``'s parameters and optimizer state from a checkpoint of any plan.

    ``layout``: saved key -> its segments (every rank's); ``full_shapes``: the saved logical
    shapes; ``read(keys)``: a collective that returns the saved tensors of ``keys`` (each rank
    its own list). Raises ValueError naming the parameter when the checkpoint does not fit."""
    for name, shape in pm.full_shapes.items():
        if name not in full_shapes:
            raise ValueError(f"checkpoint: it has no parameter {name!r} (a different model?)")
        if tuple(full_shapes[name]) != tuple(shape):
            raise ValueError(f"checkpoint: parameter {name!r} has shape {tuple(full_shapes[name])} "
                             f"in the checkpoint and {tuple(shape)} in the model")
    exact: dict[tuple, tuple[str, Segment]] = {}
    pieces: dict[tuple[str, str], dict[tuple, tuple[str, Segment]]] = {}
    own = f"rank{_rank()}/"
    for key in sorted(layout, key=lambda k: (not k.startswith(own), k)):  # own keys first
        for seg in layout[key]:
            exact.setdefault(seg.geometry(), (key, seg))
            pieces.setdefault((seg.name, seg.kind), {}).setdefault(seg.geometry(), (key, seg))
    targets = _targets(pm)
    plans: list[tuple[_Target, list[tuple[str, Segment]]]] = []
    missing_state: set[tuple[str, str]] = set()
    for t in targets:
        hit = exact.get(t.seg.geometry())
        if hit is None and t.seg.kind == "step":  # the step count of any copy of the parameter
            found = pieces.get((t.seg.name, "step"))
            hit = next(iter(found.values())) if found else None
        if hit is not None:
            plans.append((t, [hit]))
            continue
        found = pieces.get((t.seg.name, t.seg.kind))
        if not found:
            if t.seg.kind == "param":
                raise ValueError(f"checkpoint: no saved values of parameter {t.seg.name!r}")
            missing_state.add((t.seg.name, t.seg.kind))  # never stepped when saved
            continue
        plans.append((t, list(found.values())))
    keys = sorted({k for _, srcs in plans for k, _ in srcs})
    saved = read(keys)
    assembled: dict[tuple[str, str], _Assembled] = {}
    with torch.no_grad():
        for t, srcs in plans:
            if len(srcs) == 1 and srcs[0][1].geometry()[2:] == t.seg.geometry()[2:] or t.seg.kind == "step":
                key, seg = srcs[0]
                t.put(saved[key].reshape(-1)[seg.off:seg.off + seg.b - seg.a])
                continue
            ident = (t.seg.name, t.seg.kind)
            if ident not in assembled:
                full = _Assembled(tuple(full_shapes[t.seg.name]), saved[srcs[0][0]].dtype)
                for key, seg in srcs:
                    full.add(seg, saved[key].reshape(-1)[seg.off:seg.off + seg.b - seg.a])
                assembled[ident] = full
            t.put(assembled[ident].take(t.seg))
    if missing_state:
        _drop_state(pm, {name for name, _ in missing_state})


def _drop_state(pm, names: set[str]) -> None:
    """Optimizer states the checkpoint does not have: back to "never stepped"."""
    by_id = {id(p): m for p, m in pm.unique_params()}
    opt = pm.optimizer
    if opt.adamw is not None:
        for p in opt.adamw.param_groups[0]["params"]:
            if by_id[id(p)].name in names:
                opt.adamw.state.pop(p, None)
    if opt.zero1 is not None:
        for shard in opt.zero1.shards:
            if any(by_id[id(p)].name in names for p, *_ in shard.segments()):
                opt.zero1.state.pop(shard.params[0], None)


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


__all__ = ["KINDS", "Entry", "Segment", "local_state", "restore", "validate_layout"]
