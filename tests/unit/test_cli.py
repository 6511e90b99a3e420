"""The galvatron command line: plan show / convert / validate, help, error reporting."""

import json
import subprocess
import sys

import pytest

from galvatron import LayerStrategy, Plan
from galvatron.cli import main
from tests.unit.test_galvatron_format import G2_PLAN


@pytest.fixture
def g2_file(tmp_path):
    path = tmp_path / "galvatron_config_x_1nodes_8gpus_per_node_36GB_bf16.json"
    path.write_text(json.dumps(G2_PLAN))
    return path


def test_plan_show_prints_a_grouped_table(g2_file, capsys):
    assert main(["plan", "show", str(g2_file)]) == 0
    out = capsys.readouterr().out
    assert "world_size=8  pp=2  schedule=gpipe" in out
    assert "stage  layers      tp" in out
    assert "4 ulysses" in out and "zero3" in out


def test_plan_convert_both_ways_round_trips(g2_file, tmp_path, capsys):
    ours = tmp_path / "ours.json"
    back = tmp_path / "back.json"
    assert main(["plan", "convert", str(g2_file), str(ours)]) == 0
    assert json.loads(ours.read_text())["version"] == 1
    assert main(["plan", "convert", str(ours), str(back)]) == 0
    assert {k: json.loads(back.read_text())[k] for k in G2_PLAN} == G2_PLAN
    assert "Galvatron-2 format" in capsys.readouterr().out


def test_plan_validate_and_errors_exit_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "plan.json"
    Plan(world_size=4, layers=(LayerStrategy(tp=2),) * 3, global_batch_size=4).save(path)
    assert main(["plan", "validate", str(path), "--num-layers", "3"]) == 0
    assert main(["plan", "validate", str(path), "--world-size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("galvatron: error:") and "plan is for 4 devices but the job has 8" in err
    assert "Traceback" not in err


def test_data_prepare_writes_a_token_file(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("hello galvatron\n" * 10)
    assert main(["data", "prepare", str(tmp_path / "a.txt"), "--out", str(tmp_path / "d")]) == 0
    assert "161 tokens (uint16" in capsys.readouterr().out
    assert main(["data", "prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "e")]) == 2


def test_train_help_lists_the_fixed_flags():
    out = subprocess.run([sys.executable, "-m", "galvatron", "train", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag in ("--model", "--nproc", "--steps", "--seed", "--global-batch-size", "--seq-len", "--dtype",
                 "--plan", "--search", "--run-dir", "--resume"):
        assert flag in out


def test_module_entry_point_and_help():
    out = subprocess.run([sys.executable, "-m", "galvatron", "plan", "convert", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--world-size" in out and "Galvatron-2" in out
    out = subprocess.run([sys.executable, "-m", "galvatron", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for cmd in ("search", "profile", "train", "visualize", "plan"):
        assert cmd in out


def test_plan_convert_megatron_sp_flags(g2_file, tmp_path):
    """Galvatron-2's tp layers import with Megatron-SP unless --no-megatron-sp says otherwise."""
    on, off = tmp_path / "on.json", tmp_path / "off.json"
    assert main(["plan", "convert", str(g2_file), str(on)]) == 0
    assert main(["plan", "convert", str(g2_file), str(off), "--no-megatron-sp"]) == 0
    kinds = [[s["sp_kind"] for s in json.loads(p.read_text())["layers"]] for p in (on, off)]
    assert kinds == [["megatron", "megatron", "ulysses", "none"], ["none", "none", "ulysses", "none"]]
    back = tmp_path / "back.json"
    assert main(["plan", "convert", str(off), str(back)]) == 0
    assert json.loads(back.read_text())["sequence_parallel"] == 0  # the switch survives the round trip


def test_galvatron2_detection_has_one_definition():
    """Whether a file is a Galvatron-2 plan is decided by plan.is_galvatron2_plan alone: no
    other module tests for its keys."""
    import pathlib

    import galvatron
    from galvatron.plan import is_galvatron2_plan

    root = pathlib.Path(galvatron.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "plan.py"
                 and any(f'"{k}" in ' in p.read_text() for k in ("pp_deg", "tp_sizes_enc"))]
    assert offenders == []
    assert is_galvatron2_plan({"pp_deg": 1}) and is_galvatron2_plan({"tp_sizes_enc": "1"})
    assert not is_galvatron2_plan({"version": 1, "pp_deg": 1}) and not is_galvatron2_plan([1])
