"""Model profiler on the gpt2-debug model: exact parameter counts, activation bytes that match
an independent measurement of a whole forward, times that grow with the batch, and a profile
that round-trips and drives the search."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import galvatron
import galvatron.models as M
from galvatron.cli import main
from galvatron.models.spec import measure_saved_bytes
from galvatron.profiler.shard import tp_shard
from galvatron.profiles import ModelProfile, hardware_preset

SEQ = 64


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One measured profile (through the CLI) shared by the tests of this module."""
    out = tmp_path_factory.mktemp("mp") / "mp.json"
    argv = ["profile", "model", "--model", "gpt2-debug", "--seq-len", str(SEQ), "--dtype", "bf16",
            "--batch-sizes", "1,8", "--max-degree", "4", "--repeats", "5", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    return out, ModelProfile.load(out)


def _whole_forward_saved_bytes(batch: int, dtype: torch.dtype) -> int:
    """Independent of the profiler: one forward + loss of the whole model, saved storages."""
    model = M.build("gpt2-debug", seed=3).to(dtype).train()
    ids = torch.randint(0, 512, (batch, SEQ))
    params = [*model.parameters(), *model.buffers()]
    _, got = measure_saved_bytes(lambda: model.loss(model(input_ids=ids), {"labels": ids}), exclude=params)
    return got


def test_activation_bytes_match_a_whole_model_forward_within_two_percent(profiled):
    _, prof = profiled
    per_sample = (sum(prof.layer_types[t].act_bytes_per_sample["none"][1] for t in prof.layer_type_of)
                  + prof.embedding.embed_act_bytes_per_sample[1] + prof.embedding.head_act_bytes_per_sample[1])
    for batch in (1, 3):
        real = _whole_forward_saved_bytes(batch, torch.bfloat16)
        assert abs(per_sample * batch - real) / real < 0.02, (per_sample * batch, real)


def test_parameter_counts_are_exact_and_shards_hold_a_dth_of_the_matrices(profiled):
    _, prof = profiled
    model = M.build("gpt2-debug", seed=0)
    layer = model.layers[0]
    assert prof.layer_types[0].param_count == sum(p.numel() for p in layer.parameters())
    e = prof.embedding
    assert e.tied_param_count == model.embed.wte.weight.numel()
    assert e.embed_param_count + e.head_param_count + e.tied_param_count == \
        model.num_params() - 2 * sum(p.numel() for p in layer.parameters())
    shards = prof.measurements["layers"]["gpt2"]["param_count_shard"]
    h, f = 64, 256
    norms_and_row_bias = 4 * h + h + h  # two LayerNorms, o_proj and fc_out biases (replicated)
    for d in (1, 2, 4):
        sharded = 4 * h * h + 3 * h + 2 * h * f + f
        assert int(shards[str(d)] if str(d) in shards else shards[d]) == sharded // d + norms_and_row_bias


def test_sharded_activation_bytes_equal_the_exact_spec_in_fp32_and_extra_seq_lens_are_timed():
    """The tp / Megatron-SP / Ulysses measurements on simulated ranks equal the spec (which
    tests/unit/test_models_spec.py checks against real saved tensors) to the byte."""
    from galvatron.profiler.model import ModelProfilerOptions, profile_model

    prof = profile_model("gpt2-debug", seq_len=32, precision="fp32",
                         opts=ModelProfilerOptions(batch_sizes=(1,), max_degree=4, warmup=0, repeats=1,
                                                   checkpoint=False, verbose=False, extra_seq_lens=(16,)))
    ls = M.spec(M.get_config("gpt2-debug")).layer_specs["gpt2"]
    acts = prof.layer_types[0].act_bytes_per_sample
    sources = prof.measurements["layers"]["gpt2"]["sources"]
    assert not any(k.startswith("act.") for k in sources), sources  # all measured, none filled in
    for d in (1, 2, 4):
        assert acts["none"][d] == ls.act_bytes(1, 32, 4, tp=d)
        if d > 1:
            assert acts["megatron"][d] == ls.act_bytes(1, 32, 4, tp=d, sp_kind="megatron")
            assert acts["ulysses"][d] == ls.act_bytes(1, 32, 4, sp=d, sp_kind="ulysses")
    assert sorted(prof.measurements["seq_scaling"][16]["gpt2"]["fwd_ms"]) == [1, 2, 4]  # raw points at seq 16


def test_the_time_fit_recovers_fixed_and_per_sample_costs_from_noisy_synthetic_timings():
    """The fitting of measured layer times (``_layer_profile``), on synthetic timings with known
    costs: ``fixed + per_sample * batch / degree`` plus one-sided noise of up to 3% (what a busy
    CPU adds). Timing a real layer belongs in benchmarks, not in a test."""
    from types import SimpleNamespace

    from galvatron.profiler.model import _layer_profile

    fixed, per_sample = {"fwd": 0.05, "bwd": 0.11, "ckpt": 0.16}, {"fwd": 0.8, "bwd": 1.7, "ckpt": 2.5}
    noise = [0.0, 0.02, 0.0, 0.01, 0.03]  # relative, one-sided

    def times(kind, d):
        return [[b, (fixed[kind] + per_sample[kind] * b / d) * (1 + n)]
                for b, n in zip((1, 2, 4, 8, 16), noise, strict=True)]

    degrees = [1, 2]  # degree 4 "not measurable": scaled from degree 2
    res = {"param_count": 1, "sources": {}, "act_bytes": {"none": {}, "megatron": {}, "ulysses": {}},
           "fwd_ms": {d: times("fwd", d) for d in degrees},
           "bwd_ms": {d: times("bwd", d) for d in degrees}, "ckpt_bwd_ms": {1: times("ckpt", 1)}}
    prof = SimpleNamespace(spec=M.spec("gpt2-debug"), degrees=[1, 2, 4], seq=SEQ, cb=2, ln_bytes=2)
    lt = SimpleNamespace(name="gpt2")
    out = _layer_profile(prof, lt, res)
    for d in degrees:
        assert lt.fwd_ms_per_sample[d] == pytest.approx(per_sample["fwd"] / d, rel=0.05), d
        assert lt.bwd_ms_per_sample[d] == pytest.approx(per_sample["bwd"] / d, rel=0.05), d
        for b in (1, 4, 16):  # the fitted line reproduces the noiseless times within the noise
            for kind, fx, ps in (("fwd", lt.fwd_ms_fixed, lt.fwd_ms_per_sample),
                                 ("bwd", lt.bwd_ms_fixed, lt.bwd_ms_per_sample)):
                assert fx + ps[d] * b == pytest.approx(fixed[kind] + per_sample[kind] * b / d, rel=0.04)
    assert 0 <= lt.fwd_ms_fixed <= fixed["fwd"] and 0 <= lt.bwd_ms_fixed <= fixed["bwd"]
    # the unmeasured degree: the largest measured one scaled by d_m / d, and said so
    assert lt.fwd_ms_per_sample[4] == pytest.approx(lt.fwd_ms_per_sample[2] / 2, rel=1e-12)
    assert res["sources"]["time.tp4"] == "scaled from degree 2"
    assert out["fit"]["ckpt_bwd_ms_per_sample"][1] == pytest.approx(per_sample["ckpt"], rel=0.05)
    # time grows with the batch and shrinks with the shard
    assert lt.fwd_ms_fixed + 8 * lt.fwd_ms_per_sample[1] > lt.fwd_ms_fixed + lt.fwd_ms_per_sample[1]
    assert lt.fwd_ms_per_sample[1] > lt.fwd_ms_per_sample[2] > lt.fwd_ms_per_sample[4] > 0


def test_the_profiler_records_raw_timings_of_every_batch_and_degree(profiled):
    _, prof = profiled
    raw = prof.measurements["layers"]["gpt2"]
    for table in ("fwd_ms", "bwd_ms", "ckpt_bwd_ms"):
        assert sorted(int(b) for b, _ in raw[table]["1"]) == [1, 8], table
        assert all(t > 0 for _, t in raw[table]["1"]), table
    lt = prof.layer_types[0]
    assert all(v > 0 for v in lt.fwd_ms_per_sample.values()) and all(v > 0 for v in lt.bwd_ms_per_sample.values())


def test_profile_round_trips_and_drives_the_search(profiled, tmp_path):
    path, prof = profiled
    assert prof.source == "measured" and prof.model == "gpt2-debug" and prof.seq_len == SEQ
    assert prof.model_config["name"] == "gpt2-debug" and prof.measurements["config"]["hidden_size"] == 64
    again = tmp_path / "again.json"
    prof.save(again)
    assert ModelProfile.load(again).to_dict() == prof.to_dict()
    hw = hardware_preset("cpu-gloo", gpus_per_node=4)
    res = galvatron.search(ModelProfile.load(path), hw, global_batch_size=8, max_tp=4)
    assert res.plan.world_size == 4 and res.predicted.step_time_s > 0
    assert main(["search", "--model-profile", str(path), "--hardware-preset", "cpu-gloo", "--gpus-per-node", "2",
                 "--global-batch-size", "4"]) == 0


def test_compare_prints_analytic_against_measured(profiled, tmp_path, capsys):
    path, _ = profiled
    ana = tmp_path / "analytic.json"
    assert main(["profile", "model", "--model", "gpt2-debug", "--seq-len", str(SEQ), "--dtype", "bf16",
                 "--max-degree", "4", "--analytic", "--out", str(ana)]) == 0
    capsys.readouterr()
    assert main(["profile", "compare", str(ana), str(path)]) == 0
    out = capsys.readouterr().out
    assert "param_count" in out and "act_bytes/sample ulysses d=2" in out and "fwd_ms_per_sample d=4" in out
    assert "+0.0%" in out.split("param_count")[1].splitlines()[0]


def test_tp_shard_splits_columns_and_rows():
    layer = M.build("llama-debug", seed=0).layers[0]
    shard = tp_shard(layer, 2)
    assert shard.attn.q_proj.out_features * 2 == layer.attn.q_proj.out_features
    assert shard.attn.o_proj.in_features * 2 == layer.attn.o_proj.in_features
    assert shard.mlp.down_proj.in_features * 2 == layer.mlp.down_proj.in_features
    assert shard.norm1.weight.shape == layer.norm1.weight.shape
    x = torch.randn(2, 8, 64)
    assert shard(M.Carry(x)).hidden.shape == x.shape and dataclasses.is_dataclass(shard(M.Carry(x)))


@pytest.mark.parametrize("argv, message", [
    (["--model", "nope"], "model name 'nope' is unknown"),
    (["--model", "gpt2-debug", "--device", "cuda"], "no CUDA device"),
    (["--model", "gpt2-debug", "--batch-sizes", "0"], "positive integers"),
    (["--model", "gpt2-debug", "--max-degree", "3"], "power of two"),
    (["--model", "gpt2-debug", "--set", "hidden_sise=8"], "unknown config field"),
    (["--model", "vit-debug", "--extra-seq-lens", "32"], "fixed by its image size"),
    (["--model", "gpt2-debug", "--out", "/nonexistent-dir/mp.json"], "does not exist"),
])
def test_bad_model_requests_fail_with_a_clear_message(tmp_path, capsys, argv, message):
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "mp.json"
    assert main(["profile", "model", "--out", str(out), *argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("galvatron: error:") and message in err and "Traceback" not in err
    assert not out.exists()
