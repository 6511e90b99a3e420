"""Shared cases for the visualizer tests: a llama2-7b plan on 8 A100s (pp=2, uneven split,
checkpointing on some layers), with synthetic measured metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import galvatron
from galvatron.profiles import hardware_preset, model_profile
from galvatron.visualize import load_metrics, report_data, write_report

ROOT = Path(__file__).resolve().parents[2]
PLAN_PATH = ROOT / "examples" / "plans" / "llama2-7b_8gpus_pp2_tp2.json"
GiB = 2**30


@pytest.fixture(scope="session")
def llama():
    hw = hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
    mp = model_profile("llama2-7b", hardware=hw, precision="bf16")
    plan = galvatron.Plan.load(PLAN_PATH)
    return plan, mp, hw


def synthetic_metrics(path: Path, num_steps: int = 6) -> Path:
    """metrics.jsonl as a training run writes it: step, loss, step time, per-rank peaks."""
    with open(path, "w") as f:
        for step in range(num_steps):
            f.write(json.dumps({"step": step, "loss": 10.0 - step * 0.5,
                                "step_time_s": 12.0 if step == 0 else 10.0 + 0.1 * step,
                                "peak_memory_bytes_per_rank": [int((20 + r) * GiB) for r in range(8)]}) + "\n")
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Where screenshots go: $GALVATRON_ARTIFACTS if set, else a pytest temp dir."""
    d = os.environ.get("GALVATRON_ARTIFACTS")
    if d:
        os.makedirs(d, exist_ok=True)
        return Path(d)
    return tmp_path_factory.mktemp("visualize-artifacts")


@pytest.fixture(scope="session")
def llama_report(llama, tmp_path_factory):
    """(path of the HTML report, its data) for the llama case, with metrics and the best uniform baseline."""
    plan, mp, hw = llama
    d = tmp_path_factory.mktemp("report")
    metrics = load_metrics(synthetic_metrics(d / "metrics.jsonl"))
    data = report_data(plan, mp, hw, memory_budget_bytes=36 * GiB, metrics=metrics, plan_label="llama plan")
    path = d / "report.html"
    write_report(path, data)
    return path, data
