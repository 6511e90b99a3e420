"""The report shows exactly galvatron.estimate's numbers, and user text stays text (no browser)."""

from __future__ import annotations

import dataclasses
import json
import re
import statistics

import pytest

import galvatron
from galvatron.visualize import render_report, report_data
from galvatron.visualize.data import MEM_COMPONENTS, TIME_COMPONENTS, load_metrics
from galvatron.visualize.report import json_for_script
from tests.visualize.conftest import GiB
from tests.visualize.domquery import ancestor_attr, embedded_data, find, parse


def _expected(plan, mp, hw):
    pred = galvatron.estimate(plan, mp, hw)
    d = pred.to_dict()
    d["layer_timing_ms"] = [dict(t) for t in pred.layer_timing_ms]
    return d


def test_embedded_json_equals_estimate_for_plan_and_best_uniform(llama, llama_report):
    plan, mp, hw = llama
    path, _ = llama_report
    data = embedded_data(path.read_text())
    assert data["plan"]["prediction"] == _expected(plan, mp, hw)
    assert galvatron.Plan.from_dict(data["plan"]["plan"]) == plan
    res = galvatron.search(mp, hw, memory_gb=36, global_batch_size=plan.global_batch_size)
    uniform = res.best_uniform.plan.replace(predicted=None)
    assert galvatron.Plan.from_dict(data["baseline"]["plan"]) == uniform
    assert data["baseline"]["prediction"] == _expected(uniform, mp, hw)
    assert data["speedup"] == pytest.approx(data["plan"]["prediction"]["samples_per_s"]
                                            / res.best_uniform.predicted.samples_per_s, rel=1e-12)
    assert data["memory_budget_bytes"] == 36 * GiB


def test_drawn_bars_carry_the_estimated_values(llama, llama_report):
    plan, mp, hw = llama
    path, _ = llama_report
    pred = galvatron.estimate(plan, mp, hw)
    doc = parse(path.read_text())
    segs = ancestor_attr(doc, "rect", "seg", ("svg", "data-plan", "plan"), "mem-stage", "data-stage")
    drawn = {(int(s), a["data-component"]): int(a["data-value"]) for s, a in segs}
    expected = {(s, c): m[c] for s, m in enumerate(pred.stage_memory) for c in MEM_COMPONENTS if m[c] > 0}
    assert drawn == expected
    bars = find(doc, "g", "time-bar")
    assert [b["data-plan"] for b in bars] == ["plan", "baseline"]
    times = ancestor_attr(doc, "rect", "seg", ("g", "data-plan", "plan"), "time-bar", "data-plan")
    assert {a["data-component"]: float(a["data-value"]) for _, a in times} == {
        c: pred.breakdown_ms[c] for c in TIME_COMPONENTS if pred.breakdown_ms[c] > 0}
    layers = find(doc, "rect", "layer-time", ("svg", "data-plan", "plan"))
    assert [float(a["data-fwd"]) for a in layers] == [t["fwd_ms"] for t in pred.layer_timing_ms]
    budget = find(doc, "line", "budget", ("svg", "data-plan", "plan"))
    assert [int(b["data-value"]) for b in budget] == [36 * GiB]


def test_strategy_map_runs_cover_every_layer_and_stage(llama, llama_report):
    plan, _, _ = llama
    doc = parse(llama_report[0].read_text())
    spans = find(doc, "g", "stage-span", ("svg", "data-plan", "plan"))
    assert [int(s["data-count"]) for s in spans] == list(plan.stage_layers)
    for row in ("tp", "sp", "dp", "dp_type", "ckpt"):
        runs = [g for g in find(doc, "g", "run", ("svg", "data-plan", "plan")) if g["data-row"] == row]
        covered = [i for g in runs for i in range(int(g["data-first"]), int(g["data-last"]) + 1)]
        assert covered == list(range(plan.num_layers)), row
    ckpt = [(int(g["data-first"]), int(g["data-last"])) for g in find(doc, "g", "run") if g.get("data-row") == "ckpt"]
    assert (0, 9) in ckpt  # the example plan checkpoints layers 0-9


def test_measured_metrics_summary(llama_report, tmp_path):
    _, data = llama_report
    m = data["measured"]
    times = [10.0 + 0.1 * s for s in range(1, 6)]  # step 0 is warm-up
    assert m["step_time_s"]["measured"] == pytest.approx(statistics.median(times))
    pred = data["plan"]["prediction"]
    assert m["step_time_s"]["predicted"] == pred["step_time_s"]
    assert m["peak_memory_bytes"]["measured"] == 27 * GiB
    assert [s["measured"] for s in m["stage_peak_memory_bytes"]] == [23 * GiB, 27 * GiB]
    assert m["stage_peak_memory_bytes"][1]["error"] == pytest.approx(
        (pred["stage_memory"][1]["total_bytes"] - 27 * GiB) / (27 * GiB))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 0, "loss": 1}\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: .*'step' and 'loss'"):
        load_metrics(bad)
    bad.write_text('{"step": "one", "loss": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: step must be an integer"):
        load_metrics(bad)


def _hostile(mp):
    evil = "<script>document.documentElement.setAttribute('data-pwned','1')</script>"
    types = [dataclasses.replace(lt, name="</script><img src=x onerror=alert(1)>" + evil) for lt in mp.layer_types]
    return dataclasses.replace(mp, model=evil + "&amp;", layer_types=types), evil


def test_names_are_escaped_in_html_and_json(llama):
    plan, mp, hw = llama
    bad, evil = _hostile(mp)
    text = render_report(report_data(plan, bad, hw, baseline=None, title=None))
    assert text.count("<script") == 3  # error hook, data blob, ready check
    assert evil not in text and "<img" not in text
    assert "&lt;script&gt;document.documentElement" in text
    assert embedded_data(text)["model"]["name"] == evil + "&amp;"
    assert re.search(r'id="galvatron-data">[^<]*</script>', text)  # nothing in the blob closes it


def test_json_for_script_round_trips_without_markup_characters():
    obj = {"a": "</script><!-- & >", "b": [1.5, 2 ** 40], "c": "\u2028"}
    text = json_for_script(obj)
    assert not set("<>&") & set(text)
    assert json.loads(text) == obj


def test_metrics_written_per_rank_take_the_slowest_rank_and_per_rank_peaks(llama, tmp_path):
    plan, mp, hw = llama
    path = tmp_path / "m.jsonl"
    with open(path, "w") as f:
        for step in range(3):
            for rank in range(8):
                f.write(json.dumps({"step": step, "rank": rank, "loss": 2.0, "step_time_ms": 1000 + rank + step,
                                    "peak_memory_bytes": (10 + rank) * GiB}) + "\n")
    data = report_data(plan, mp, hw, baseline=None, metrics=load_metrics(path), warmup_steps=1)
    m = data["measured"]
    assert [s["step_time_s"] for s in m["series"]] == [1.007, 1.008, 1.009]
    assert m["step_time_s"]["measured"] == pytest.approx(1.0085)
    assert [s["measured"] for s in m["stage_peak_memory_bytes"]] == [13 * GiB, 17 * GiB]


def test_metrics_with_the_jobs_live_tensor_prediction_compare_rank_by_rank(llama, tmp_path):
    plan, mp, hw = llama
    path = tmp_path / "m.jsonl"
    pred = [(5 + r) * GiB for r in range(8)]
    with open(path, "w") as f:
        for step in range(2):
            f.write(json.dumps({"step": step, "loss": 2.0, "step_time_s": 1.0,
                                "peak_memory_bytes_per_rank": [(4 + r) * GiB for r in range(8)],
                                "predicted_peak_memory_bytes_per_rank": pred}) + "\n")
    m = report_data(plan, mp, hw, baseline=None, metrics=load_metrics(path))["measured"]
    assert m["peak_memory_bytes"]["predicted"] == 12 * GiB and m["peak_memory_bytes"]["measured"] == 11 * GiB
    assert [r["error"] for r in m["rank_peak_memory_bytes"]] == pytest.approx([1 / (4 + r) for r in range(8)])
    assert [s["predicted"] for s in m["stage_peak_memory_bytes"]] == [8 * GiB, 12 * GiB]  # largest per stage
    assert "peak live tensors, rank 7" in render_report(report_data(plan, mp, hw, baseline=None,
                                                                     metrics=load_metrics(path)))
