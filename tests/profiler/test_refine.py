"""`galvatron profile refine`: the fit recovers known constants from synthetic measurements,
the refined profiles carry them, and bad runs give clear errors. No timing here."""

from __future__ import annotations

import json

import pytest

import galvatron
from galvatron.cli import main as cli_main
from galvatron.plan import Plan
from galvatron.profiler import refine as R

ROWS = ("step", "forward", "backward", "recompute", "tp_comm", "sp_comm", "dp_comm", "redistribution",
        "p2p+bubble", "optimizer", "other")


def _report(pred: dict[str, float], scales: dict[str, float], ranks: int = 2) -> dict:
    """A `galvatron check --json` report whose measured rows are the predicted ones times the
    scale of their kind."""
    kind = {**{r: "compute" for r in R.COMPUTE_ROWS}, **{r: "comm" for r in R.COMM_ROWS}, "optimizer": "optimizer"}
    rows = {}
    for r in ROWS:
        p = pred.get(r, 0.0)
        rows[r] = {"predicted": p, "measured": p * scales.get(kind.get(r, ""), 1.0), "error": None}
    return {"ranks": [{"rank": i, "stage": 0, "time_s": rows} for i in range(ranks)]}


PRED_A = {"forward": 0.3, "backward": 0.6, "recompute": 0.0, "tp_comm": 0.1, "dp_comm": 0.02, "optimizer": 0.01}
PRED_B = {"forward": 0.2, "backward": 0.4, "recompute": 0.2, "sp_comm": 0.05, "redistribution": 0.01,
          "optimizer": 0.004}
TRUE = {"compute": 1.23, "comm": 2.7, "optimizer": 1.9}


def test_fit_recovers_known_scales_from_check_reports(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_report(PRED_A, TRUE)))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "check.json").write_text(json.dumps(_report(PRED_B, TRUE)))
    obs = R.load_observations([str(tmp_path / "a.json"), str(tmp_path / "b")])
    assert len(obs) == 2 * 3 + 2 * 3  # 2 ranks x 3 kinds per report
    ref = R.fit_scales(obs)
    for k, v in TRUE.items():
        assert ref.scales[k] == pytest.approx(v, rel=1e-12)
        assert ref.fitted[k]
    assert ref.residual_after == pytest.approx(0.0, abs=1e-12)
    assert ref.residual_before > 0.2


def test_fit_recovers_joint_scales_from_step_totals():
    """Training runs give only step totals: three independent mixes determine three scales."""
    mixes = [{"compute": 1.0, "comm": 0.1, "optimizer": 0.01}, {"compute": 0.5, "comm": 0.5, "optimizer": 0.02},
             {"compute": 0.7, "comm": 0.05, "optimizer": 0.2}, {"compute": 0.9, "comm": 0.3, "optimizer": 0.05}]
    obs = [R.Observation(m, sum(TRUE[k] * v for k, v in m.items()), f"run{i}") for i, m in enumerate(mixes)]
    ref = R.fit_scales(obs)
    for k, v in TRUE.items():
        assert ref.scales[k] == pytest.approx(v, rel=1e-9)


def test_kind_too_small_in_every_step_total_is_held_at_one():
    """Step totals where the optimizer is under 5% cannot determine its scale: it stays 1 and
    the others are fitted with it at 1."""
    mixes = [{"compute": 1.0, "comm": 0.1, "optimizer": 0.01}, {"compute": 0.5, "comm": 0.5, "optimizer": 0.02},
             {"compute": 0.9, "comm": 0.3, "optimizer": 0.03}]
    true = {**TRUE, "optimizer": 1.0}
    obs = [R.Observation(m, sum(true[k] * v for k, v in m.items()), f"run{i}") for i, m in enumerate(mixes)]
    ref = R.fit_scales(obs)
    assert not ref.fitted["optimizer"] and ref.scales["optimizer"] == 1.0
    assert ref.scales["compute"] == pytest.approx(TRUE["compute"], rel=1e-9)
    assert ref.scales["comm"] == pytest.approx(TRUE["comm"], rel=1e-9)


def test_kind_without_measurement_keeps_scale_one():
    pred = {"forward": 0.3, "backward": 0.6, "optimizer": 0.01}
    ref = R.fit_scales(R.check_report_observations(_report(pred, TRUE), "r"))
    assert ref.scales["comm"] == 1.0 and not ref.fitted["comm"]
    assert ref.scales["compute"] == pytest.approx(TRUE["compute"], rel=1e-12)


def _profiles():
    hw = galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=2)
    mp = galvatron.model_profile("gpt2-debug", hardware=hw, precision="fp32", num_layers=2)
    return hw, mp


def test_refined_profiles_scale_each_term_exactly():
    hw, mp = _profiles()
    ref = R.Refinement(scales=dict(TRUE), fitted={k: True for k in TRUE}, observations=1, residual_before=0.0,
                       residual_after=0.0)
    hw2, mp2 = R.refined_profiles(hw, mp, ref)
    assert hw2.optimizer_ms_per_param == pytest.approx(hw.optimizer_ms_per_param * TRUE["optimizer"])
    for a, b in zip(hw.collectives, hw2.collectives, strict=True):
        assert b.alpha_ms == pytest.approx(a.alpha_ms * TRUE["comm"])
        assert b.bandwidth_gbps == pytest.approx(a.bandwidth_gbps / TRUE["comm"])
    assert hw2.measurements["refined"]["scales"] == TRUE
    # the cost model's terms scale by the constants: tp (communication), DDP (optimizer)
    plan = Plan.uniform(2, 2, tp=2, global_batch_size=4, precision="fp32")
    p1, p2 = galvatron.estimate(plan, mp, hw), galvatron.estimate(plan, mp2, hw2)
    b1, b2 = p1.stage_breakdown_ms[0], p2.stage_breakdown_ms[0]
    assert b2["compute_ms"] == pytest.approx(b1["compute_ms"] * TRUE["compute"], rel=1e-9)
    assert b2["tp_comm_ms"] == pytest.approx(b1["tp_comm_ms"] * TRUE["comm"], rel=1e-9)
    assert b2["optimizer_ms"] == pytest.approx(b1["optimizer_ms"] * TRUE["optimizer"], rel=1e-9)
    assert mp.layer_types[0].fwd_ms_per_sample != mp2.layer_types[0].fwd_ms_per_sample  # a copy was scaled


def _run_dir(path, plan, step_times, hw, mp):
    path.mkdir()
    plan.save(path / "plan.json")
    hw.save(path / "hardware.json")
    mp.save(path / "model_profile.json")
    with open(path / "metrics.jsonl", "w") as f:
        for i, t in enumerate(step_times):
            f.write(json.dumps({"step": i + 1, "loss": 1.0, "step_time_s": t}) + "\n")


def test_training_runs_fit_and_cli_writes_refined_profiles(tmp_path, capsys):
    hw, mp = _profiles()
    plans = [Plan.uniform(2, 2, global_batch_size=4, precision="fp32"),
             Plan.uniform(2, 2, tp=2, global_batch_size=4, precision="fp32"),
             Plan.uniform(2, 2, dp_type="zero3", global_batch_size=8, precision="fp32")]
    dirs = []
    for i, plan in enumerate(plans):
        split = R.split_prediction(galvatron.estimate(plan, mp, hw))
        measured = sum(TRUE[k] * v for k, v in split.items())
        _run_dir(tmp_path / f"run{i}", plan, [9.0, 9.0, measured, measured * 1.0, measured], hw, mp)
        dirs.append(str(tmp_path / f"run{i}"))
    obs = R.load_observations(dirs, hw, mp)
    assert [o.measured_s for o in obs] == pytest.approx(
        [sum(TRUE[k] * v for k, v in R.split_prediction(galvatron.estimate(p, mp, hw)).items()) for p in plans])
    out = tmp_path / "refined"
    assert cli_main(["profile", "refine", *dirs, "--out", str(out)]) == 0
    hw2 = galvatron.HardwareProfile.load(out / "hardware.json")
    mp2 = galvatron.ModelProfile.load(out / "model_profile.json")
    fitted = hw2.measurements["refined"]["scales"]
    assert fitted["compute"] == pytest.approx(TRUE["compute"], rel=1e-6)
    assert fitted["comm"] == pytest.approx(TRUE["comm"], rel=1e-6)
    assert mp2.measurements["refined"]["scales"] == fitted
    assert "compute_scale" in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing"), "no such file or directory"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "neither check.json"),
    (lambda p: (p / "bad.json").write_text("{not json") and str(p / "bad.json"), "malformed JSON"),
    (lambda p: (p / "other.json").write_text('{"ranks": []}') and str(p / "other.json"),
     "not a report of `galvatron check --json`"),
    (lambda p: (p / "neg.json").write_text(json.dumps(
        {"ranks": [{"time_s": {r: {"predicted": 1.0, "measured": -1.0} for r in ROWS}}]})) and str(p / "neg.json"),
     "expected a non-negative number"),
    (lambda p: (p / "rows.json").write_text(json.dumps({"ranks": [{"time_s": {"step": {}}}]})) and str(p / "rows.json"),
     "time_s.forward: missing"),
])
def test_bad_runs_give_clear_errors(tmp_path, make, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("`", ".")):
        R.load_observations([make(tmp_path)])


def test_training_run_errors(tmp_path):
    hw, mp = _profiles()
    plan = Plan.uniform(2, 2, global_batch_size=4, precision="fp32")
    _run_dir(tmp_path / "short", plan, [1.0, 1.0], hw, mp)
    with pytest.raises(ValueError, match="need more than 2"):
        R.load_observations([str(tmp_path / "short")], hw, mp)
    with pytest.raises(ValueError, match="needs the base profiles"):
        R.load_observations([str(tmp_path / "short")])
    _run_dir(tmp_path / "garbled", plan, [1.0, 1.0, 1.0], hw, mp)
    with open(tmp_path / "garbled" / "metrics.jsonl", "a") as f:
        f.write("{oops\n")
    with pytest.raises(ValueError, match="line 4: malformed JSON"):
        R.load_observations([str(tmp_path / "garbled")], hw, mp)
    (tmp_path / "noplan").mkdir()
    (tmp_path / "noplan" / "metrics.jsonl").write_text('{"step_time_s": 1.0}\n')
    with pytest.raises(ValueError, match="plan.json not found"):
        R.load_observations([str(tmp_path / "noplan")], hw, mp)
    with pytest.raises(ValueError, match="no measurements"):
        R.fit_scales([])


def test_cli_refine_without_profiles_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(_report(PRED_A, TRUE)))
    assert cli_main(["profile", "refine", str(tmp_path / "a.json"), "--out", str(tmp_path / "o")]) == 2
    assert "base profiles are needed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_refine_takes_the_profiles_a_check_report_recorded(tmp_path):
    hw, mp = _profiles()
    rep = {**_report(PRED_A, TRUE), "profiles": {"hardware": hw.to_dict(), "model": mp.to_dict()}}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "check.json").write_text(json.dumps(rep))
    assert cli_main(["profile", "refine", str(tmp_path / "c"), "--out", str(tmp_path / "o")]) == 0
    hw2 = galvatron.HardwareProfile.load(tmp_path / "o" / "hardware.json")
    assert hw2.optimizer_ms_per_param == pytest.approx(hw.optimizer_ms_per_param * TRUE["optimizer"], rel=1e-9)
    assert hw2.measurements["refined"]["scales"]["comm"] == pytest.approx(TRUE["comm"], rel=1e-9)
