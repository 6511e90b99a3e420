"""``galvatron visualize`` on the command line, and ``--png`` images (matplotlib extra)."""

from __future__ import annotations

import json
import sys

import pytest

import galvatron
from galvatron.cli import main
from galvatron.visualize.png import write_pngs
from tests.visualize.conftest import PLAN_PATH, synthetic_metrics
from tests.visualize.domquery import embedded_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cli_writes_report_and_pngs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "r.html", tmp_path / "png"
    metrics = synthetic_metrics(tmp_path / "metrics.jsonl")
    assert main(["visualize", str(PLAN_PATH), "--model", "llama2-7b", "--memory-gb", "36",
                 "--metrics", str(metrics), "--out", str(out), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "speed-up over the best uniform plan" in text
    data = embedded_data(out.read_text())
    assert data["hardware"]["world_size"] == 8 and data["measured"] is not None
    for name in ("memory.png", "strategy.png", "time.png", "measured.png"):
        blob = (png / name).read_bytes()
        assert blob.startswith(PNG_MAGIC) and len(blob) > 10_000, name


def test_cli_baseline_plan_and_no_baseline(tmp_path):
    base = tmp_path / "base.json"
    galvatron.Plan.uniform(world_size=8, num_layers=32, tp=8, dp_type="zero3", num_microbatches=8,
                           global_batch_size=64).save(base)
    out = tmp_path / "r.html"
    assert main(["visualize", str(PLAN_PATH), "--model", "llama2-7b", "--baseline", str(base), "--out", str(out)]) == 0
    data = embedded_data(out.read_text())
    assert data["baseline"]["label"] == "baseline" and data["baseline"]["plan"]["layers"][0]["tp"] == 8
    assert main(["visualize", str(PLAN_PATH), "--model", "llama2-7b", "--no-baseline", "--out", str(out)]) == 0
    assert embedded_data(out.read_text())["baseline"] is None


@pytest.mark.parametrize("args, message", [
    ([], "give a PLAN.json"),
    ([str(PLAN_PATH), "--model", "llama2-7b"], "--out REPORT.html and/or --png DIR"),
    ([str(PLAN_PATH), "--out", "x.html"], "--model (or --model-profile) is required"),
    ([str(PLAN_PATH), "--model", "llama2-7b", "--nodes", "2", "--gpus-per-node", "8", "--out", "x.html"], "plan is for 8 devices"),
    ([str(PLAN_PATH), "--model", "gpt2-debug", "--out", "x.html"], "the model has"),
])
def test_cli_errors_are_one_line(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["visualize", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("galvatron: error:") and message in err and "Traceback" not in err


def test_png_without_matplotlib_fails_with_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert main(["visualize", str(PLAN_PATH), "--model", "llama2-7b", "--png", str(tmp_path / "p")]) == 2
    assert "pip install 'galvatron[viz]'" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_write_pngs_returns_the_files(llama_report, tmp_path):
    pytest.importorskip("matplotlib")
    _, data = llama_report
    paths = write_pngs(json.loads(json.dumps(data)), tmp_path / "imgs")
    assert [p.rsplit("/", 1)[1] for p in paths] == ["memory.png", "strategy.png", "time.png", "measured.png"]
