"""Activation layouts of the runtime (no process group): the exchange plan assembles every
destination block correctly, and moves exactly what the cost model charges
(``_C.redistribution_fraction``, i.e. ``max_exchange_units`` in comm_model.cpp)."""

from __future__ import annotations

import itertools

import pytest
import torch

import galvatron.models as M
from galvatron import _C
from galvatron._core_convert import strategy_to_c
from galvatron.parallel.mesh import axis_members, coords, local_index, validate
from galvatron.parallel.redistribute import exchange_plan, layout_of
from galvatron.plan import LayerStrategy as S
from galvatron.plan import Plan

N, MB, SEQ = 4, 4, 16


def _strategies(n):
    out = []
    for tp, sp in itertools.product((1, 2, 4), (1, 2, 4)):
        if n % (tp * sp):
            continue
        kinds = ["ulysses"] if sp > 1 else (["none", "megatron"] if tp > 1 else ["none"])
        for kind, cons in itertools.product(kinds, (True, False)):
            out.append(S(tp=tp, sp=sp, sp_kind=kind, tp_consecutive=cons))
    return out


PAIRS = list(itertools.product(_strategies(N), repeat=2))


@pytest.mark.parametrize("a,b", PAIRS, ids=[f"{a.describe()}->{b.describe()}" for a, b in PAIRS])
def test_exchange_plan_builds_every_block_and_moves_what_the_cost_model_charges(a, b):
    src, dst = layout_of(a, N), layout_of(b, N)
    full = torch.arange(MB * SEQ).view(MB, SEQ)
    plan = exchange_plan(src, dst, N, MB, SEQ)
    sent, recv = [0] * N, [0] * N
    for k in range(N):
        b0, b1, s0, s1, _ = dst.block(k, MB, SEQ)
        out = torch.full((b1 - b0, s1 - s0), -1)
        for dev, (p0, p1, q0, q1) in plan[k]:
            h0, h1, g0, g1, _ = src.block(dev, MB, SEQ)
            assert h0 <= p0 and p1 <= h1 and g0 <= q0 and q1 <= g1, "piece not held by source"
            out[p0 - b0:p1 - b0, q0 - s0:q1 - s0] = full[p0:p1, q0:q1]
            if dev != k:
                sent[dev] += (p1 - p0) * (q1 - q0)
                recv[k] += (p1 - p0) * (q1 - q0)
        assert torch.equal(out, full[b0:b1, s0:s1])
    ours = max(max(sent), max(recv)) / (MB * SEQ)
    theirs = _C.redistribution_fraction(strategy_to_c(a), strategy_to_c(b), N, MB, SEQ)
    assert ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("s", _strategies(8), ids=lambda s: s.describe())
def test_rank_coordinates_follow_the_plan_layout(s):
    n = 8
    seen = set()
    for i in range(n):
        c = coords(s, n, i)
        assert local_index(s, n, c) == i
        seen.add((c.t, c.j, c.d))
        assert len(axis_members(s, n, i, "tp")) == s.tp
        assert len(axis_members(s, n, i, "weight")) == n // s.tp
    assert len(seen) == n
    if s.tp_consecutive and s.tp > 1:
        assert axis_members(s, n, 0, "tp") == list(range(s.tp))


def test_plan_validation_names_the_offending_field():
    model = M.build("llama-debug", device="meta")  # 4 heads, 2 kv heads
    with pytest.raises(ValueError, match=r"layers\[0\].*num_kv_heads=2"):
        validate(Plan.uniform(4, 2, tp=4, precision="fp32"), model, 16)
    with pytest.raises(ValueError, match=r"sequence length 6 .* 4 sequence shards"):
        validate(Plan.uniform(4, 2, sp=4, sp_kind="ulysses", precision="fp32", global_batch_size=4,
                              embedding=S()), M.build("gpt2-debug", device="meta"), 6)
    with pytest.raises(ValueError, match="layers"):
        validate(Plan.uniform(2, 3, precision="fp32"), model, 16)
