"""The search is exact: on many random small problems its answer equals brute-force enumeration
of every plan of the space (each plan evaluated on its own by the cost model), under tight
memory budgets that sit exactly on plan peaks."""

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from galvatron import _C
from tests.core.search_fixtures import all_plans, best_under, random_hardware, random_model

# (nodes, devices per node); non-powers of two: 3, 6 and 12 devices, degrees 3 and 6
SHAPES = [(1, 1), (1, 2), (1, 4), (2, 2), (1, 8), (2, 4), (4, 2), (1, 3), (1, 6), (3, 2), (2, 3), (3, 1),
          (2, 6)]
DP_TYPES = [_C.DpType.DDP, _C.DpType.ZERO1, _C.DpType.ZERO2, _C.DpType.ZERO3]


def random_options(rng: random.Random, world: int):
    o = _C.SearchOptions()
    o.world_size = world
    o.global_batch_sizes = [rng.choice([1, 2, 4, 8])]
    o.num_microbatches = rng.choice([[], [1], [2]])
    o.schedules = rng.sample([_C.Schedule.GPIPE, _C.Schedule.ONE_F_ONE_B, _C.Schedule.INTERLEAVED_1F1B],
                             rng.choice([1, 2, 3]))
    o.virtual_stages = rng.choice([[2], [2, 3]])
    o.max_tp = rng.choice([1, 2, 3, 4, 6])
    o.max_sp = rng.choice([2, 3, 4])
    o.max_pp = rng.choice([1, 2, 3, 4, 8])
    o.dp_types = rng.sample(DP_TYPES, rng.choice([1, 2]))
    o.allow_ulysses = rng.random() < 0.4
    o.allow_megatron_sp = rng.random() < 0.5
    o.allow_checkpoint = rng.random() < 0.6
    o.allow_selective_checkpoint = rng.random() < 0.6
    o.allow_strided = rng.random() < 0.3
    o.search_pp_split = rng.random() < 0.8
    o.megatron_sp_only = rng.random() < 0.15  # drawn last: the earlier draws of each seed stay
    o.num_threads = 1
    return o


def check_against_brute_force(seed: int, uniform: bool = False, shapes=None) -> bool:
    """Compares on the problem of `seed`; False when its space is too large to enumerate."""
    rng = random.Random(seed)
    nodes, gpn = rng.choice(shapes or SHAPES)
    world = nodes * gpn
    hw = random_hardware(rng, nodes, gpn)
    model = random_model(rng, num_layers=rng.randint(1, 6), num_types=rng.choice([1, 1, 2]), max_degree=world)
    opts = random_options(rng, world)
    opts.uniform_only = uniform
    try:
        plans = all_plans(model, hw, opts, limit=6000)
    except OverflowError:
        return False
    if not plans:
        return False
    peaks = sorted({p[0] for p in plans})
    # A budget exactly at some plan's peak (tight), sometimes below every plan.
    budget = rng.choice(peaks) if rng.random() < 0.9 else peaks[0] - 1
    opts.memory_budget_bytes = budget
    expected = best_under(plans, budget)
    out = _C.search(model.to_tables(), hw.to_tables(), opts)
    if expected is None:
        assert not out.found
        # The smallest-memory report covers GPipe/1F1B plans.
        v1_peaks = [p[0] for p in plans if p[2].virtual_stages == 1]
        if v1_peaks:
            assert out.min_feasible_bytes == min(v1_peaks)
        return True
    assert out.found
    assert out.samples_per_s == pytest.approx(expected[0], rel=1e-9)
    # The returned plan, evaluated on its own, fits and has that throughput.
    pred = _C.evaluate_plan(model.to_tables(), hw.to_tables(), out.plan)
    assert max(s.total_bytes for s in pred.stage_memory) <= budget
    assert opts.global_batch_sizes[0] / (pred.step_time_ms / 1e3) == pytest.approx(expected[0], rel=1e-9)
    return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.integers(0, 2**31))
def test_search_equals_brute_force_on_random_small_problems(seed):
    assume(check_against_brute_force(seed))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(st.integers(0, 2**31))
def test_uniform_search_equals_brute_force_over_uniform_plans(seed):
    assume(check_against_brute_force(seed, uniform=True))


def test_search_equals_brute_force_on_400_fixed_seeds():
    """A deterministic sweep (the hypothesis tests above explore further on every run)."""
    checked = sum(check_against_brute_force(seed) for seed in range(400))  # (more degrees: larger spaces)
    assert checked >= 150


def test_search_equals_brute_force_with_degrees_three_and_six():
    """Non-power-of-two worlds only (3, 6, 12 devices): tp/sp/pp degrees of 3 and 6."""
    checked = 0
    for seed in range(400):
        checked += check_against_brute_force(seed, shapes=[(1, 3), (1, 6), (3, 2), (2, 3), (2, 6)])
        if checked >= 60:
            break
    assert checked >= 60
