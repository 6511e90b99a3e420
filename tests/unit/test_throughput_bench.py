"""The GPU throughput benchmark's script runs (CPU smoke configuration) and reports MFU
consistently with the spec's FLOPs."""

import importlib.util
import json
import os

import pytest

HERE = os.path.dirname(__file__)


def _load():
    path = os.path.join(HERE, "..", "..", "benchmarks", "run_throughput_bench.py")
    spec = importlib.util.spec_from_file_location("run_throughput_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_throughput_bench_smoke_on_cpu(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "t.jsonl"
    assert bench.main(["--steps", "2", "--dtype", "fp32", "--peak-tflops", "0.1", "--out", str(out)]) == 0
    (line,) = out.read_text().splitlines()
    r = json.loads(line)
    assert json.loads(capsys.readouterr().out.splitlines()[0]) == r
    from galvatron import models

    flops = 3 * models.spec(models.get_config("llama-debug")).flops_fwd(2, 64)
    assert r["model_tflops_per_s"] == pytest.approx(flops / r["median_step_s"] / 1e12, rel=1e-9)
    assert r["mfu"] == pytest.approx(r["model_tflops_per_s"] / 0.1, rel=1e-9)
    assert r["attn_backend"] == "sdpa" and r["params"] == sum(
        p.numel() for p in models.build("llama-debug").parameters())


def test_one_billion_configuration_is_about_one_billion_parameters():
    from galvatron import models

    n = models.spec(models.get_config("llama2-7b", **_load().ONE_B)).param_count()
    assert 0.9e9 < n < 1.1e9


def test_datasheet_peaks_by_device_name():
    from galvatron.profiles.presets import datasheet_peak_tflops

    assert datasheet_peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989.0
    assert datasheet_peak_tflops("NVIDIA H200", "fp32") == 67.0
    assert datasheet_peak_tflops("NVIDIA A100-SXM4-40GB", "bf16") == 312.0
    assert datasheet_peak_tflops("NVIDIA GeForce RTX 4090", "bf16") is None
