"""``galvatron2_compatible``: the search keeps to what Galvatron-2's runtime executes, so its
plan always exports to Galvatron-2's format, and the export reads back as the same plan."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest

import galvatron
from galvatron import DpType, SpKind
from galvatron.cli import main
from galvatron.plan_io import read_galvatron2_plan, write_galvatron2_plan
from galvatron.search import galvatron2_spaces

# (model, preset, nodes x gpus, memory GiB, global batch sizes): small to large, tight to loose
CASES = [
    ("gpt2-debug", "cpu-gloo", (1, 4), 4, [8]),
    ("llama-debug", "cpu-gloo", (1, 4), 4, [8, 16]),
    ("t5-debug", "cpu-gloo", (1, 2), 4, [4]),
    ("bert-debug", "cpu-gloo", (1, 4), 4, [8]),
    ("gpt2-medium", "a100-40g-sxm", (1, 8), 12, [16]),
    ("llama2-7b", "a100-80g-sxm", (1, 8), 36, [16, 32]),
    ("llama2-7b", "a100-40g-sxm", (2, 8), 24, [32]),
    ("llama2-13b", "h100-sxm", (1, 8), 40, [8]),
]


def _normalised(plan):
    """dp type of single-replica strategies is irrelevant (written as the default)."""
    per_stage = plan.devices_per_stage

    def norm(s):
        return dataclasses.replace(s, dp_type=DpType.DDP) if s.tp * s.sp == per_stage else s

    return plan.replace(layers=tuple(norm(s) for s in plan.layers), embedding=norm(plan.embedding),
                        predicted=None)


@pytest.mark.parametrize("model, preset, shape, memory_gb, batches", CASES,
                         ids=[f"{c[0]}-{c[2][0]}x{c[2][1]}-{c[3]}GB" for c in CASES])
def test_every_compatible_search_result_exports_and_reads_back(tmp_path, model, preset, shape, memory_gb,
                                                               batches):
    hw = galvatron.hardware_preset(preset, num_nodes=shape[0], gpus_per_node=shape[1])
    mp = galvatron.model_profile(model, hardware=hw)
    checked = 0
    for schedules, dp_types in itertools.product((["1f1b"], ["gpipe", "1f1b"]),
                                                 (["ddp", "zero1", "zero2", "zero3"], ["zero2", "zero3"])):
        try:
            res = galvatron.search(mp, hw, memory_gb=memory_gb, global_batch_size=batches,
                                   uniform_baseline=False, galvatron2_compatible=True,
                                   schedules=schedules, dp_types=dp_types, num_threads=1)
        except ValueError as e:
            assert "no plan in the search space fits" in str(e)
            continue
        plan = res.plan
        tp_layers = [s for s in (*plan.layers, plan.embedding) if s.tp > 1]
        assert len({s.sp_kind is SpKind.MEGATRON for s in tp_layers}) <= 1  # one global switch
        assert all(s.tp_consecutive for s in (*plan.layers, plan.embedding))
        assert max(plan.stage_layers) - min(plan.stage_layers) <= 1  # even split
        assert {s.dp_type for s in plan.layers} <= {DpType.DDP, DpType.ZERO2, DpType.ZERO3}
        path = tmp_path / "g2.json"
        d = write_galvatron2_plan(plan, path)  # never refused
        back = read_galvatron2_plan(path)
        assert _normalised(back) == _normalised(plan)
        assert galvatron.estimate(back, mp, hw).step_time_s == pytest.approx(res.predicted.step_time_s, rel=1e-9)
        assert d["vocab_sdp"] == d["embed_sdp"]
        checked += 1
    assert checked > 0


def test_compatible_search_is_the_best_of_its_sub_spaces():
    """The union of the sub-spaces is searched: the winner is the best of their optima."""
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("llama2-7b", hardware=hw)
    space = dict(dp_types=["ddp", "zero2", "zero3"], num_threads=1)
    best = galvatron.search(mp, hw, memory_gb=36, global_batch_size=16, uniform_baseline=False,
                            galvatron2_compatible=True, **space)
    subs = [galvatron.search(mp, hw, memory_gb=36, global_batch_size=16, uniform_baseline=False, **sub)
            for sub in galvatron2_spaces(space)]
    assert len(subs) == 4
    assert best.predicted.samples_per_s == max(r.predicted.samples_per_s for r in subs)
    # the unrestricted search is at least as fast: the restriction only removes plans
    free = galvatron.search(mp, hw, memory_gb=36, global_batch_size=16, uniform_baseline=False,
                            num_threads=1)
    assert free.predicted.samples_per_s >= best.predicted.samples_per_s * (1 - 1e-12)


def test_sub_spaces_pin_what_galvatron2_cannot_run():
    subs = galvatron2_spaces({"schedules": ["interleaved_1f1b", "1f1b"]})
    assert {(tuple(s["dp_types"]), s["megatron_sp_only"]) for s in subs} == {
        (("ddp", "zero3"), False), (("ddp", "zero3"), True), (("zero2", "zero3"), False),
        (("zero2", "zero3"), True)}
    assert all(s["pp_split"] == "even" and not s["allow_strided"] for s in subs)
    assert all([x.value for x in s["schedules"]] == ["1f1b"] for s in subs)
    assert len(galvatron2_spaces({"allow_megatron_sp": False, "dp_types": ["zero3"]})) == 1
    with pytest.raises(ValueError, match="pp_split='searched' is outside what Galvatron-2 runs"):
        galvatron2_spaces({"pp_split": "searched"})
    with pytest.raises(ValueError, match="schedules: Galvatron-2 runs gpipe and 1f1b only"):
        galvatron2_spaces({"schedules": ["interleaved_1f1b"]})
    with pytest.raises(ValueError, match="dp_types: Galvatron-2 runs ddp, zero2 and zero3 only"):
        galvatron2_spaces({"dp_types": ["zero1"]})


def test_megatron_sp_only_gives_every_tp_strategy_megatron_sp():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("llama2-7b", hardware=hw)
    # without ZeRO-3 a 7B model needs tp at 20 GB (with it, the cost model may prefer plain ZeRO-3)
    res = galvatron.search(mp, hw, memory_gb=20, global_batch_size=16, uniform_baseline=False,
                           megatron_sp_only=True, num_threads=1, dp_types=["ddp", "zero2"])
    tp = [s for s in (*res.plan.layers, res.plan.embedding) if s.tp > 1]
    assert tp and all(s.sp_kind is SpKind.MEGATRON for s in tp)


def test_cli_search_galvatron2_compatible_writes_galvatron2_format(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert main(["search", "--model", "llama2-7b", "--memory-gb", "36", "--global-batch-size", "16",
                 "--galvatron2-compatible", "--out", str(out), "--format", "galvatron2",
                 "--threads", "1"]) == 0
    d = json.loads(out.read_text())
    assert "version" not in d and d["pp_deg"] >= 1 and "vocab_sdp" in d and "sequence_parallel" in d
    assert "Galvatron-2 format" in capsys.readouterr().out
    assert main(["plan", "validate", str(out)]) == 0  # our loader detects and reads it back


def test_core_enumeration_with_megatron_sp_only():
    from galvatron import _C

    o = _C.SearchOptions()
    o.allow_megatron_sp, o.megatron_sp_only = False, True
    strategies = _C.enumerate_strategies(o, 8, False)
    assert {s.sp_kind for s in strategies if s.tp > 1} == {_C.SpKind.MEGATRON}
    assert any(s.tp == 1 and s.sp_kind == _C.SpKind.NONE for s in strategies)  # tp 1 is unchanged
    o.megatron_sp_only = False
    assert {s.sp_kind for s in _C.enumerate_strategies(o, 8, False) if s.tp > 1} == {_C.SpKind.NONE}
