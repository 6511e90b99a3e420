"""The CPU time corrections of the profilers (docs/cost_model.md, "Corrections from
measurement"), on exact synthetic numbers: no timing is asserted here."""

from __future__ import annotations

import dataclasses

import pytest

import galvatron
from galvatron.profiler import model as PM
from galvatron.profiler.fit import summarize_ms
from galvatron.profiler.hardware import cpu_no_overlap_slowdown


def test_cpu_repeats_are_summarised_by_their_mean_gpu_by_their_median():
    samples = [3.0, 4.0, 11.0, 12.0, 10.0]  # a gloo all-reduce: fast once, typically slow
    assert summarize_ms(samples, cuda=False) == pytest.approx(8.0)
    assert summarize_ms(samples, cuda=True) == 10.0
    with pytest.raises(ValueError, match="no samples"):
        summarize_ms([], cuda=False)


@pytest.mark.parametrize("cuda, processes, cores, expected", [
    (False, 2, 2, 2.0), (False, 4, 2, 2.0), (False, 1, 2, 1.0), (False, 2, 8, 1.0), (True, 8, 2, 1.0)])
def test_no_overlap_on_cpu_when_ranks_fill_the_cores(cuda, processes, cores, expected):
    assert cpu_no_overlap_slowdown(cuda, processes, cores) == expected


@pytest.mark.parametrize("processes, cores, expected", [(4, 2, 2.0), (2, 2, 1.0), (1, 4, 1.0), (3, 2, 1.5)])
def test_core_share(processes, cores, expected):
    assert PM.core_share(processes, cores) == expected


def test_no_overlap_makes_the_cost_model_add_zero3_collectives_to_the_compute():
    hw = galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=2)
    mp = galvatron.model_profile("gpt2-debug", hardware=hw, precision="fp32", num_layers=2)
    plan = galvatron.Plan.uniform(2, 2, dp_type="zero3", global_batch_size=8, precision="fp32")
    serial = galvatron.estimate(plan, mp, dataclasses.replace(hw, overlap_slowdown=2.0))
    perfect = galvatron.estimate(plan, mp, dataclasses.replace(hw, overlap_slowdown=1.0))
    b2, b1 = serial.stage_breakdown_ms[0], perfect.stage_breakdown_ms[0]
    assert b2["dp_comm_ms"] > b1["dp_comm_ms"]  # exposed in full when nothing overlaps
    assert b2["compute_ms"] == b1["compute_ms"]


class _FakeClock:
    """Deterministic times (forward ``2b + 1`` ms, backward ``4b + 2`` ms at batch ``b``); the
    cases of each call are recorded, so the test sees which were timed together."""

    calls: list[list] = []

    def __init__(self, *a, **k) -> None:
        pass

    def fwd_bwd(self, cases, bwd):
        _FakeClock.calls.append(list(cases))
        out = {}
        for key, fwd in cases.items():
            bwd(fwd())
            b = key[1] if isinstance(key, tuple) else key
            out[key] = (2.0 * b + 1.0, 4.0 * b + 2.0)
        return out


def _profile(monkeypatch, processes: int, cores: int):
    _FakeClock.calls = []
    monkeypatch.setattr(PM, "_Clock", _FakeClock)
    monkeypatch.setattr(PM.os, "cpu_count", lambda: cores)
    opts = PM.ModelProfilerOptions(batch_sizes=(1, 2), max_degree=2, repeats=1, warmup=0, verbose=False,
                                   device="cpu", processes=processes)
    return PM.profile_model("gpt2-debug", seq_len=32, precision="fp32", opts=opts)


def test_every_degree_is_timed_in_one_round_robin(monkeypatch):
    _profile(monkeypatch, 1, 2)
    layer_calls = [c for c in _FakeClock.calls if c and isinstance(c[0], tuple)]
    assert layer_calls and all(set(c) == {(1, 1), (1, 2), (2, 1), (2, 2)} for c in layer_calls)


def test_processes_beyond_the_cores_scale_every_time(monkeypatch):
    alone = _profile(monkeypatch, 1, 2)
    shared = _profile(monkeypatch, 4, 2)  # 4 processes on 2 cores: half a core each
    assert alone.measurements["core_share"] == 1.0 and shared.measurements["core_share"] == 2.0
    for a, s in zip(alone.layer_types, shared.layer_types, strict=True):
        assert s.fwd_ms_fixed == pytest.approx(2 * a.fwd_ms_fixed)
        assert s.bwd_ms_fixed == pytest.approx(2 * a.bwd_ms_fixed)
        for d in a.fwd_ms_per_sample:
            assert s.fwd_ms_per_sample[d] == pytest.approx(2 * a.fwd_ms_per_sample[d])
            assert s.bwd_ms_per_sample[d] == pytest.approx(2 * a.bwd_ms_per_sample[d])
    ea, es = alone.embedding, shared.embedding
    for d in ea.head_fwd_ms_per_sample:
        assert es.head_fwd_ms_per_sample[d] == pytest.approx(2 * ea.head_fwd_ms_per_sample[d])
        assert es.embed_bwd_ms_per_sample[d] == pytest.approx(2 * ea.embed_bwd_ms_per_sample[d])


def test_the_training_job_asks_the_profiler_for_its_world(monkeypatch):
    """The job no longer rescales the profile itself: it passes its process count."""
    from galvatron.training import job
    from galvatron.training.config import TrainConfig

    seen = {}

    def fake_profile_model(name, seq_len=None, precision="bf16", opts=None, **kw):
        seen["opts"] = opts
        return galvatron.model_profile(name, seq_len=seq_len, precision=precision, **kw)

    monkeypatch.setattr(PM, "profile_model", fake_profile_model)
    cfg = TrainConfig()
    cfg.model.name, cfg.model.dtype, cfg.model.overrides = "gpt2-debug", "fp32", {"num_layers": 2}
    mp = job._measured_model_profile(cfg, 32, 4)
    assert seen["opts"].processes == 4
    ref = galvatron.model_profile("gpt2-debug", seq_len=32, precision="fp32", num_layers=2)
    assert mp.layer_types[0].fwd_ms_per_sample == ref.layer_types[0].fwd_ms_per_sample  # not rescaled again


def test_processes_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="processes"):
        PM.ModelProfilerOptions(processes=0).validate()
