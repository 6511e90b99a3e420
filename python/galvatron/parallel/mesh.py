"""Process groups of a plan: rank coordinates, validation, one cached group per rank set.

Rank layout (as ``galvatron.plan``): pipeline outermost, stage ``s`` holds global ranks
``s*N .. (s+1)*N-1`` (``N = world_size // pp``). Inside a stage, local index ``i`` of a layer
with strategy ``(tp, sp, dp)``:

- consecutive (``tp_consecutive``): ``i = (d*sp + j)*tp + t`` (tp innermost);
- strided: ``i = (t*sp + j)*dp + d`` (dp innermost).

``t``/``j``/``d`` are the tp, Ulysses-sp and dp coordinates. The *weight group* of a layer
(the ranks that hold replicas or ZeRO shards of the same tp shard) is its ``dp*sp`` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist

from galvatron.plan import LayerStrategy, Plan, SpKind


@dataclass(frozen=True)
class Coord:
    """Coordinates of one local stage index under one strategy."""

    t: int
    j: int
    d: int


def coords(s: LayerStrategy, stage_size: int, local_rank: int) -> Coord:
    """Coordinates of the stage's device ``local_rank`` under strategy ``s``."""
    dp = stage_size // (s.tp * s.sp)
    i = local_rank
    if s.tp_consecutive:
        return Coord(t=i % s.tp, j=(i // s.tp) % s.sp, d=i // (s.tp * s.sp))
    return Coord(t=i // (dp * s.sp), j=(i // dp) % s.sp, d=i % dp)


def local_index(s: LayerStrategy, stage_size: int, c: Coord) -> int:
    """The stage index of the device with coordinates ``c`` (inverse of :func:`coords`)."""
    dp = stage_size // (s.tp * s.sp)
    if s.tp_consecutive:
        return (c.d * s.sp + c.j) * s.tp + c.t
    return (c.t * s.sp + c.j) * dp + c.d


def axis_members(s: LayerStrategy, stage_size: int, local_rank: int, axis: str) -> list[int]:
    """Local indices sharing every coordinate of ``local_rank`` except ``axis`` (``tp``,
    ``sp``, ``weight`` = dp and sp together), in axis order."""
    c = coords(s, stage_size, local_rank)
    dp = stage_size // (s.tp * s.sp)
    if axis == "tp":
        return [local_index(s, stage_size, Coord(t, c.j, c.d)) for t in range(s.tp)]
    if axis == "sp":
        return [local_index(s, stage_size, Coord(c.t, j, c.d)) for j in range(s.sp)]
    if axis == "weight":
        return sorted(local_index(s, stage_size, Coord(c.t, j, d)) for d in range(dp) for j in range(s.sp))
    raise AssertionError(axis)


class Groups:
    """Creates process groups on demand; every rank must request the same sets in the same
    order (the runtime walks the plan identically on every rank). ``partition`` is a list of
    disjoint global rank lists covering the world; this rank's group is returned (None for a
    group of one)."""

    def __init__(self, rank: int, world_size: int, timeout=None) -> None:
        self.rank, self.world_size, self.timeout = rank, world_size, timeout
        self._cache: dict[tuple[tuple[int, ...], ...], dist.ProcessGroup | None] = {}

    def get(self, partition: list[list[int]]) -> dist.ProcessGroup | None:
        key = tuple(sorted(tuple(sorted(p)) for p in partition))
        if key not in self._cache:
            mine = None
            for ranks in key:
                if len(ranks) == self.world_size:
                    g = dist.group.WORLD
                elif len(ranks) > 1:
                    g = dist.new_group(list(ranks), timeout=self.timeout)
                else:
                    g = None
                if self.rank in ranks:
                    mine = g
            self._cache[key] = mine
        return self._cache[key]

    def layer_group(self, s: LayerStrategy, stage_size: int, axis: str) -> dist.ProcessGroup | None:
        """This rank's ``axis`` group of strategy ``s`` (``stage_size`` devices per stage)."""
        uniq = {tuple(stage * stage_size + m for m in axis_members(s, stage_size, i, axis))
                for stage in range(self.world_size // stage_size) for i in range(stage_size)}
        return self.get([list(p) for p in uniq])

    def stage_group(self, stage_size: int) -> dist.ProcessGroup | None:
        return self.get([list(range(s * stage_size, (s + 1) * stage_size))
                         for s in range(self.world_size // stage_size)])

    def pipeline_group(self, stage_size: int) -> dist.ProcessGroup | None:
        return self.get([list(range(i, self.world_size, stage_size)) for i in range(stage_size)])

    def pair_group(self, pairs: list[list[int]]) -> dist.ProcessGroup | None:
        return self.get(pairs)


# ---------------------------------------------------------------------------- validation


def validate(plan: Plan, model, seq_len: int, decoder_seq_len: int | None = None) -> None:
    """Check the plan against the model and sequence length before any collective: every
    attention's heads and kv-heads divisible by ``tp*sp``, every MLP width by ``tp``, the
    sequence by every layout's sequence split (read from the layers, so per-stage widths
    such as Swin's are checked too). Encoder-decoder models: both streams pass through every
    layer's layout (and the pipeline boundary), so the decoder length must divide too."""
    from galvatron.parallel.redistribute import boundary_layout, layout_of
    from galvatron.parallel.tensor_parallel import find_blocks

    plan.validate(num_layers=len(model.layers))
    if decoder_seq_len is not None and getattr(model, "memory_inputs", None) is None:
        raise ValueError(f"decoder_seq_len={decoder_seq_len}: only encoder-decoder models have a "
                         f"decoder; accepted for {type(model).__name__}: None")
    stage_size = plan.devices_per_stage
    if getattr(getattr(model, "config", None), "family", "") == "swin":
        for i, s in enumerate(plan.layers):
            if s.sp_kind is not SpKind.NONE:
                raise ValueError(f"layers[{i}]: Swin's window attention needs the whole sequence; "
                                 f"sp_kind {s.sp_kind.value!r} is not supported (accepted: 'none')")
    for i, s in enumerate(plan.layers):
        where = f"layers[{i}]"
        for _, _, m, kind in find_blocks(model.layers[i]):
            if kind == "attn":
                for name, lin in (("num_heads", m.q_proj), ("num_kv_heads", m.k_proj)):
                    heads = lin.out_features // m.head_dim
                    if heads % (s.tp * s.sp):
                        raise ValueError(f"{where}: tp*sp={s.tp * s.sp} must divide "
                                         f"{name}={heads}")
            else:
                width = (m.fc_in if hasattr(m, "fc_in") else m.up_proj).out_features
                if width % s.tp:
                    raise ValueError(f"{where}: tp={s.tp} must divide the MLP width {width}")
    lengths = [("sequence length", seq_len)]
    if decoder_seq_len is not None and decoder_seq_len != seq_len:
        lengths.append(("decoder length (decoder_seq_len)", decoder_seq_len))
    for what, length in lengths:
        for where, s in [(f"layers[{i}]", s) for i, s in enumerate(plan.layers)] + [
                ("embedding", plan.embedding)]:
            lay = layout_of(s, stage_size)
            if length % lay.n_seq:
                raise ValueError(
                    f"{where}: {what} {length} is not divisible by its {lay.n_seq} sequence "
                    f"shards (sp_kind {s.sp_kind.value!r}, tp={s.tp}, sp={s.sp}); accepted: "
                    f"lengths divisible by {lay.n_seq}, or a strategy without sequence split")
        if plan.pp > 1:
            boundary = boundary_layout(stage_size, plan.micro_batch_size)
            if length % boundary.n_seq:
                raise ValueError(
                    f"pipeline boundary: {what} {length} must be divisible by "
                    f"{boundary.n_seq} (stage size / gcd(micro-batch, stage size))")
