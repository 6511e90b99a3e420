"""galvatron check pieces without processes: the instrumentation's accounting, the per-stage
predicted terms, argument parsing and errors."""

from __future__ import annotations

import pytest

import galvatron
from galvatron.check import report as R
from galvatron.check.cli import parse_sets
from galvatron.check.fake import rank_roles
from galvatron.parallel import instrument as I
from galvatron.plan import LayerStrategy as S
from galvatron.plan import Plan


def test_recorder_charges_each_region_its_time_minus_the_regions_inside_it():
    rec = I.Recorder()
    ticks = iter(range(100))
    rec._now = lambda: float(next(ticks))  # a clock that advances by 1 per reading
    with I.recording(rec):
        with I.region("other"):  # 0 .. 9
            with I.region("forward"):  # 1 .. 4
                with I.region("tp_comm"):  # 2 .. 3
                    pass
            with I.region("backward"):  # 5 .. 8
                assert I.in_backward()
                with I.region(None):  # no region
                    pass
                with I.region("recompute"):  # 6 .. 7
                    pass
    assert not I.in_backward()
    t = rec.totals()
    assert t["tp_comm"] == 1 and t["forward"] == 2 and t["recompute"] == 1 and t["backward"] == 2
    assert t["other"] == 9 - 3 - 3
    assert sum(t.values()) == 9
    assert I.active() is None and I.region("forward") is I._NULL  # off again


def _prediction(plan):
    hw = galvatron.hardware_preset("cpu-gloo", 1, plan.world_size)
    mp = galvatron.model_profile("gpt2-debug", seq_len=64, hardware=hw, precision="fp32", num_layers=4)
    return galvatron.estimate(plan, mp, hw)


def test_every_stage_has_a_breakdown_whose_critical_one_is_the_plans_and_whose_parts_add_up():
    plan = Plan(world_size=4, pp=2, layers=(S(checkpoint=True), S(tp=2), S(dp_type="zero1"), S(dp_type="zero3")),
                global_batch_size=8, num_microbatches=2, precision="fp32").validate()
    pred = _prediction(plan)
    assert len(pred.stage_breakdown_ms) == 2
    crit = pred.stage_breakdown_ms[pred.critical_stage]
    assert {k: crit[k] for k in pred.breakdown_ms} == pytest.approx(pred.breakdown_ms)
    s0, s1 = pred.stage_breakdown_ms
    assert s0["recompute_ms"] > 0 and s1["recompute_ms"] == 0  # layer 0 is checkpointed
    assert s1["grad_sync_ms"] > 0  # ZeRO-1's reduce-scatter and all-gather, per step
    for stage in (0, 1):
        t = R.predicted_stage_terms(pred, stage)["time_s"]
        b = pred.stage_breakdown_ms[stage]
        assert t["forward"] + t["backward"] + t["recompute"] == pytest.approx(b["compute_ms"] * 1e-3)
        # dp_comm = exposed per-micro-batch ZeRO-2/3 traffic + the per-step gradient sync;
        # optimizer = the optimizer step alone (grad_sync_ms is its own field)
        assert t["dp_comm"] == pytest.approx((b["dp_comm_ms"] + b["grad_sync_ms"]) * 1e-3)
        assert t["optimizer"] == pytest.approx(b["optimizer_ms"] * 1e-3)
        mem = R.predicted_stage_terms(pred, stage)["memory_bytes"]
        m = pred.stage_memory[stage]
        assert mem["total"] == m["total_bytes"] - m["buffer_bytes"] - m["overhead_bytes"]


def test_rank_rows_and_summary_compare_each_term():
    plan = Plan.uniform(2, 4, global_batch_size=4, precision="fp32")
    pred = _prediction(plan)
    measured = {"rank": 1, "stage": 0, "step_time_s": 2 * pred.step_time_s,
                "time_s": {c: 0.001 for c in I.CATEGORIES},
                "memory_bytes": {"param": 10, "buffer": 0, "grad": 10, "optimizer": 20, "activation": 5,
                                 "temp": 5, "other": 0, "total": 50}}
    row = R.rank_rows(pred, measured)
    assert row["time_s"]["step"]["error"] == pytest.approx(-0.5)
    assert row["memory_bytes"]["transient"]["measured"] == 5
    s = R.summary([row])
    assert s["step_time_error"] == pytest.approx(-0.5)
    assert "rank 1 (stage 0)" in R.format_report({"summary": s, "ranks": [row], "steps": 3, "warmup": 1})


def test_set_overrides_parse_json_values_and_reject_anything_else():
    assert parse_sets(["num_layers=4", "name=x", "flag=true"]) == {"num_layers": 4, "name": "x", "flag": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_sets(["num_layers"])


def test_fake_check_measures_the_first_and_last_rank_of_every_stage():
    plan = Plan.uniform(8, 4, pp=2, tp=2, global_batch_size=8, num_microbatches=2)
    assert rank_roles(plan) == [0, 3, 4, 7]


def test_check_command_errors_are_one_line(tmp_path, capsys):
    from galvatron.cli import main

    plan = tmp_path / "plan.json"
    Plan.uniform(2, 2, global_batch_size=4).save(str(plan))
    assert main(["check", str(plan), "--model", "gpt2-debug", "--fake"]) == 2
    assert "--seq-len: required with --fake" in capsys.readouterr().err
    assert main(["check", str(plan), "--model", "gpt2-debug", "--set", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.json"), "--model", "gpt2-debug"]) == 2
