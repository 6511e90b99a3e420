"""One definition of the activation-layout rules: the runtime's (``parallel/redistribute.py``)
and the cost model's (``csrc/search/cost_model.h`` through ``galvatron._C``) give the same
layout, field by field, for every strategy of a small plan space (stage sizes 1-8), the
embedding and the pipeline boundary, and the same "does the activation move" answer for every
pair; and every layout agrees with the rank coordinates of the mesh (the block a device holds
is the one its tp/sp/dp coordinates say)."""

from __future__ import annotations

import itertools

import pytest

from galvatron import _C
from galvatron.parallel.mesh import coords
from galvatron.parallel.redistribute import Layout, boundary_layout, embedding_layout, layout_of
from galvatron.plan import LayerStrategy as S
from galvatron.plan import SpKind

STAGE_SIZES = (1, 2, 4, 8)


def _strategies(stage_size: int) -> list[S]:
    out = []
    for tp, sp in itertools.product((1, 2, 4, 8), repeat=2):
        if stage_size % (tp * sp):
            continue
        kinds = ["ulysses"] if sp > 1 else (["none", "megatron"] if tp > 1 else ["none"])
        for kind, consecutive in itertools.product(kinds, (True, False)):
            out.append(S(tp=tp, sp=sp, sp_kind=kind, tp_consecutive=consecutive))
    return out


def _to_c(s: S):
    """The core's strategy with the fields the layout reads (built here, not through the
    package's converter, so that this test depends only on the binding)."""
    c = _C.Strategy()
    c.tp, c.sp, c.tp_consecutive = s.tp, s.sp, s.tp_consecutive
    c.sp_kind = getattr(_C.SpKind, s.sp_kind.name)
    return c


def _fields(layout) -> tuple[int, int, int, bool]:
    return (layout.n_batch, layout.n_seq, layout.replicas, layout.consecutive)


def _both(stage_size: int) -> list[tuple[str, Layout, object]]:
    """``(name, runtime layout, cost-model layout)`` of every layer and embedding strategy and
    of the pipeline boundary for every micro-batch size up to 8."""
    out = []
    for s in _strategies(stage_size):
        c = _to_c(s)
        out.append((f"layer {s.describe()}", layout_of(s, stage_size), _C.layout_of(c, stage_size)))
        out.append((f"embedding {s.describe()}", embedding_layout(s, stage_size),
                    _C.embedding_layout(c, stage_size)))
    for mb in range(1, 9):
        out.append((f"boundary mb={mb}", boundary_layout(stage_size, mb), _C.boundary_layout(stage_size, mb)))
    return out


@pytest.mark.parametrize("stage_size", STAGE_SIZES)
def test_runtime_and_cost_model_layouts_are_equal_field_by_field(stage_size):
    for name, ours, theirs in _both(stage_size):
        assert _fields(ours) == _fields(theirs), f"stage of {stage_size}, {name}"


@pytest.mark.parametrize("stage_size", STAGE_SIZES)
def test_runtime_and_cost_model_agree_on_every_pair_whether_the_activation_moves(stage_size):
    layouts = _both(stage_size)
    for (name_a, ours_a, theirs_a), (name_b, ours_b, theirs_b) in itertools.product(layouts, repeat=2):
        assert (ours_a == ours_b) == (theirs_a == theirs_b), f"{name_a} -> {name_b}"


@pytest.mark.parametrize("stage_size", STAGE_SIZES)
def test_equality_ignores_the_device_order_only_where_both_orders_coincide(stage_size):
    """Hand-made layouts too: the order flag is ignored exactly when both orders give every
    device the same block (so equal layouts never hide a different placement)."""
    for n_batch, n_seq in itertools.product(range(1, stage_size + 1), repeat=2):
        if stage_size % (n_batch * n_seq):
            continue
        replicas = stage_size // (n_batch * n_seq)
        a, b = Layout(n_batch, n_seq, replicas, True), Layout(n_batch, n_seq, replicas, False)
        same_blocks = all(a.block(i, 8 * stage_size, 8 * stage_size) == b.block(i, 8 * stage_size, 8 * stage_size)
                          for i in range(stage_size))
        assert (a == b) == same_blocks, (n_batch, n_seq, replicas)


@pytest.mark.parametrize("stage_size", STAGE_SIZES)
def test_every_layout_holds_the_blocks_the_rank_coordinates_say(stage_size):
    """A device's batch block is its dp coordinate; its sequence block its sp coordinate
    (Ulysses) or its tp coordinate (Megatron-SP). Before the fix, tp strided x Ulysses with
    dp = 1 was stored as consecutive and gave device 1 of a tp2 x sp2 stage sequence block 0
    while its sp coordinate is 1."""
    for s in _strategies(stage_size):
        layout = layout_of(s, stage_size)
        for i in range(stage_size):
            c = coords(s, stage_size, i)
            block = layout.block(i, 8 * stage_size, 8 * stage_size)[4]
            seq = c.t if s.sp_kind is SpKind.MEGATRON else c.j
            assert divmod(block, layout.n_seq) == (c.d, seq), f"{s.describe()}: device {i}"
