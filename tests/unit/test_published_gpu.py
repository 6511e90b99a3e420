"""The cost model against published GPU runs (issue 16): torchtitan's op-level selective
checkpointing, the breakdown summing to the step on every kind of plan, and the published-runs
benchmark building every row. Exact numbers, no timing."""

import importlib.util
import json
import os

import pytest

import galvatron
from galvatron import models
from galvatron.plan import Plan
from galvatron.profiles.gpu_compute import Device, recomputed_gemms, selective_recompute_ms

HERE = os.path.dirname(__file__)
A100 = Device(peak_flops=312e12, matmul_efficiency=0.869, num_sms=108, memory_bandwidth=2.039e12,
              attention_efficiency=0.6)
LLAMA3_8B = models.spec(models.get_config("llama3-8b", max_seq_len=8192)).layer(0)
SHAPE = dict(fused=False, math_path=False, causal=True, dropout=False)
SHARED = ("megatron-sc21", "torchtitan-h100-2024-12")  # the sources of ../shared/reference/published


def test_every_other_matmul_policy_recomputes_the_second_fourth_and_sixth_matmul():
    # torchtitan's op-level policy counts aten.mm in a block's forward from 1 and recomputes the
    # even ones: Llama q, k, v, o, gate, up, down -> k, o, up; GPT q, k, v, o, fc_in, fc_out -> k, o, fc_out
    assert recomputed_gemms(LLAMA3_8B, 1, "every_other") == [(1024, 4096), (4096, 4096), (14336, 4096)]
    assert recomputed_gemms(LLAMA3_8B, 2, "every_other") == [(512, 4096), (4096, 2048), (7168, 4096)]
    gpt = models.spec(models.get_config("gpt2", hidden_size=1024, num_heads=16, ffn_hidden=4096)).layer(0)
    assert recomputed_gemms(gpt, 1, "every_other") == [(1024, 1024), (1024, 1024), (1024, 4096)]
    assert recomputed_gemms(gpt, 1, "keep") == []


def test_every_other_policy_adds_exactly_the_forward_of_those_gemms():
    keep = selective_recompute_ms(A100, LLAMA3_8B, 8192, 1, **SHAPE)
    op = selective_recompute_ms(A100, LLAMA3_8B, 8192, 1, matmuls="every_other", **SHAPE)
    # 8192 rows: k (N 1024) 64 x 4 = 256 tiles of 128x256 -> 3 waves on 108 SMs; o (N 4096)
    # 1024 tiles -> 10 waves; up (N 14336) 3584 tiles -> 34 waves; each wave one K=4096 tile
    wave_ms = 2.0 * 128 * 256 * 4096 / (312e12 * 0.869 / 108) * 1e3
    assert op - keep == pytest.approx((3 + 10 + 34) * wave_ms, rel=1e-12)


def test_model_profile_charges_the_policy_on_gpu_and_cpu_presets():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=2)
    kw = dict(seq_len=8192, hardware=hw, max_seq_len=8192)
    keep = galvatron.model_profile("llama3-8b", **kw).layer_types[0].selective_recompute_ms_per_sample
    op = galvatron.model_profile("llama3-8b", selective_matmuls="every_other", **kw).layer_types[0]
    dev = Device(312e12, hw.matmul_efficiency, hw.num_sms, hw.memory_bandwidth_gbps * 1e9, hw.attention_efficiency)
    for d in (1, 2):
        extra = sum(dev.gemm_ms(8192, n, k) for n, k in recomputed_gemms(LLAMA3_8B, d, "every_other"))
        assert op.selective_recompute_ms_per_sample[d] - keep[d] == pytest.approx(extra, rel=1e-12)
    # fwd/bwd and activation tables do not change with the policy (time of the recompute only)
    base = galvatron.model_profile("llama3-8b", **kw).layer_types[0]
    assert op.fwd_ms_per_sample == base.fwd_ms_per_sample
    assert op.selective_act_bytes_per_sample == base.selective_act_bytes_per_sample
    # the CPU preset's flat model: the recomputed FLOPs at its matmul rate
    cpu = galvatron.hardware_preset("cpu-gloo", gpus_per_node=2)
    spec = models.spec(models.get_config("llama-debug"))
    ls = spec.layer(0)
    flat_keep = galvatron.model_profile("llama-debug", hardware=cpu).layer_types[0].selective_recompute_ms_per_sample
    flat_op = galvatron.model_profile("llama-debug", hardware=cpu,
                                      selective_matmuls="every_other").layer_types[0].selective_recompute_ms_per_sample
    flops = 2 * ls.tokens(spec.seq_len) * sum(n * k for n, k in recomputed_gemms(ls, 1, "every_other"))
    for d in (1, 2):
        assert flat_op[d] - flat_keep[d] == pytest.approx(flops / (0.48e12 * 1.0) * 1e3 / d, rel=1e-12)


def test_bad_selective_matmuls_names_the_field():
    with pytest.raises(ValueError, match="selective_matmuls: 'half' is not accepted; accepted: 'keep', 'every_other'"):
        galvatron.model_profile("gpt2-debug", selective_matmuls="half")
    with pytest.raises(ValueError, match="selective_matmuls"):
        recomputed_gemms(LLAMA3_8B, 1, "odd")


def _plans():
    """(name, hardware, model profile, plan) for each kind of plan the breakdown must cover."""
    h100 = galvatron.hardware_preset("h100-96g-hbm2e-500w", num_nodes=2, gpus_per_node=8)
    llama = galvatron.model_profile("llama3-8b", seq_len=2048, hardware=h100, max_degree=8, max_seq_len=2048)
    a100 = galvatron.hardware_preset("a100-80g-sxm", num_nodes=4, gpus_per_node=8)
    gpt = galvatron.model_profile("gpt2-medium", seq_len=1024, hardware=a100, max_degree=8, precision="fp16",
                                  kernels="fused", attention="math")
    return [
        ("fsdp zero3 selective", h100, llama,
         Plan.uniform(16, llama.num_layers, dp_type="zero3", checkpoint="selective", global_batch_size=32)),
        ("ddp over nodes", a100, gpt, Plan.uniform(32, gpt.num_layers, num_microbatches=2, global_batch_size=64,
                                                   precision="fp16")),
        ("tp pp interleaved full recompute", a100, gpt,
         Plan.uniform(32, gpt.num_layers, pp=4, tp=8, checkpoint=True, num_microbatches=8, global_batch_size=8,
                      schedule="interleaved_1f1b", virtual_stages=2, precision="fp16")),
        ("megatron-sp zero1 pp2", h100, llama,
         Plan.uniform(16, llama.num_layers, pp=2, tp=4, sp_kind="megatron", dp_type="zero1", num_microbatches=4,
                      global_batch_size=8)),
    ]


@pytest.mark.parametrize("case", range(4))
def test_breakdown_terms_sum_to_the_step_on_every_stage(case):
    name, hw, mp, plan = _plans()[case]
    pred = galvatron.estimate(plan, mp, hw)
    step_ms = pred.step_time_s * 1e3
    assert sum(pred.breakdown_ms.values()) == pytest.approx(step_ms, rel=1e-9), name
    assert all(v >= 0 for v in pred.breakdown_ms.values()), name
    parts = ("compute_ms", "tp_comm_ms", "sp_comm_ms", "dp_comm_ms", "p2p_ms", "redistribution_ms",
             "grad_sync_ms", "optimizer_ms", "bubble_ms")
    for stage in pred.stage_breakdown_ms:
        assert sum(stage[k] for k in parts) == pytest.approx(step_ms, rel=1e-9), name
        assert stage["fwd_ms"] + stage["recompute_ms"] <= stage["compute_ms"] + 1e-9


def _bench():
    path = os.path.join(HERE, "..", "..", "benchmarks", "run_published_bench.py")
    spec = importlib.util.spec_from_file_location("run_published_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_published_bench_builds_every_row_and_keeps_unmodelled_ones_out_of_the_headline():
    bench = _bench()
    with open(os.path.join(HERE, "..", "..", "benchmarks", "published", "gpu_runs.json"), encoding="utf-8") as f:
        data = json.load(f)
    for r in data["rows"]:
        assert r["source"] in data["sources"], r
    titan = [r for r in data["rows"] if r["source"].startswith("torchtitan")]
    outs = [bench.evaluate(r) for r in titan]
    for r, out in zip(titan, outs, strict=True):
        assert out["predicted"] > 0 and out["published"] == r["tokens_per_s_per_gpu"]
        assert out["headline"] == (not r["torch_compile"] and not r.get("float8"))
        if r.get("float8"):
            assert any("Float8" in u for u in out["unmodelled"])
        assert out["set"] == r.get("set", "shared") and (out["set"] == "added") == (r["source"] not in SHARED)
        # torchtitan publishes torch.cuda.max_memory_reserved: compared with the allocator's share of
        # the peak, without the preset's CUDA context (1 GiB) and NCCL buffers (0.5 GiB) outside it
        assert out["predicted_allocator_gib"] == pytest.approx(out["predicted_memory_gib"] - 1.5, abs=1e-9)
        if r.get("peak_memory_gib"):
            assert out["memory_error"] == pytest.approx(out["predicted_allocator_gib"] / r["peak_memory_gib"] - 1)
        assert sum(out["breakdown_ms"].values()) == pytest.approx(out["step_time_s"] * 1e3, abs=0.1 * len(out["breakdown_ms"]))
    with pytest.raises(ValueError, match="activation_checkpointing: 'layer'"):
        bench.evaluate({**titan[0], "activation_checkpointing": "layer"})


def test_torchtitan_rows_charge_the_every_other_matmul_recompute():
    bench = _bench()
    row = {"source": "torchtitan-a100-2024", "model": "llama3-8b", "hardware": "a100-80g-sxm", "gpus": 8,
           "parallel": "FSDP 8", "seq_len": 2048, "local_batch": 1, "global_batch": 8,
           "activation_checkpointing": "selective-op", "torch_compile": False, "tokens_per_s_per_gpu": 1}
    op = bench.evaluate(row)
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("llama3-8b", seq_len=2048, hardware=hw, max_degree=1, max_seq_len=2048)
    keep = galvatron.estimate(Plan.uniform(8, mp.num_layers, dp_type="zero3", checkpoint="selective",
                                           global_batch_size=8), mp, hw)
    dev = Device(312e12, hw.matmul_efficiency, hw.num_sms, hw.memory_bandwidth_gbps * 1e9, hw.attention_efficiency)
    extra_ms = 32 * sum(dev.gemm_ms(2048, n, k) for n, k in recomputed_gemms(LLAMA3_8B, 1, "every_other"))
    assert op["breakdown_ms"]["compute_ms"] == pytest.approx(keep.breakdown_ms["compute_ms"] + extra_ms, abs=0.11)
