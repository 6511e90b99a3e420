"""The shape-dependent GPU compute model of the analytic profiles (issue 16)."""

import pytest

import galvatron
from galvatron import models
from galvatron.plan import Plan
from galvatron.profiles.gpu_compute import Device, elementwise_elements, layer_gemms, layer_ms

A100 = Device(peak_flops=312e12, matmul_efficiency=0.869, num_sms=108, memory_bandwidth=2.039e12,
              attention_efficiency=0.6)


def test_gemm_time_counts_waves_of_tiles():
    per_sm = 312e12 * 0.869 / 108
    one_wave = 2.0 * 128 * 256 * 4096 / per_sm * 1e3
    # 108 tiles of 128x256: one full wave; one tile more needs a second wave
    assert A100.gemm_ms(128 * 108, 256, 4096) == pytest.approx(one_wave)
    assert A100.gemm_ms(128 * 109, 256, 4096) == pytest.approx(2 * one_wave)
    # a partial tile costs a whole tile
    assert A100.gemm_ms(100, 200, 4096) == pytest.approx(A100.gemm_ms(128, 256, 4096))


def test_skinny_gemm_is_bound_by_memory():
    m, n, k = 16384, 16384, 16  # a thin inner dimension: writing the output dominates
    assert A100.gemm_ms(m, n, k) == pytest.approx((m * k + k * n + m * n) * 2 / 2.039e12 * 1e3)


def test_backward_is_two_gemms_of_the_forward_flops():
    f, b = A100.gemm_fwd_bwd_ms(4096, 4096, 4096)
    assert b == pytest.approx(2 * f)


def test_layer_gemms_decompose_gpt_and_llama():
    gpt = models.spec(models.get_config("gpt2", hidden_size=1024, num_heads=16, ffn_hidden=4096)).layer(0)
    assert layer_gemms(gpt, 1) == [(1024, 1024)] * 4 + [(4096, 1024), (1024, 4096)]
    assert layer_gemms(gpt, 4) == [(256, 1024)] * 3 + [(1024, 256), (1024, 1024), (1024, 1024)]
    llama = models.spec(models.get_config("llama3-8b")).layer(0)
    gemms = layer_gemms(llama, 2)
    assert gemms[:4] == [(2048, 4096), (512, 4096), (512, 4096), (4096, 2048)]
    assert gemms[4:] == [(7168, 4096), (7168, 4096), (4096, 7168)]
    assert sum(2 * n * k for n, k in gemms) * 2 == 2 * llama.matmul_params  # all weights, split over 2


def test_efficiency_rises_with_model_size_and_fused_kernels_are_faster():
    """The trend the single matmul_efficiency could not give: small layers lose more to wave
    quantisation and to the heads*s^2 softmax traffic of explicit attention."""
    def efficiency(h, heads, t):
        ls = models.spec(models.get_config("gpt2", hidden_size=h, num_heads=heads, ffn_hidden=4 * h,
                                           max_seq_len=2048, dropout=0.1)).layer(0)
        f, b = layer_ms(A100, ls, 2048, t, fused=True, math_path=True, causal=True, dropout=True)
        return 3 * ls.flops_fwd(1, 2048) / t / ((f + b) / 1e3) / 312e12

    small, large = efficiency(2304, 24, 1), efficiency(25600, 160, 8)
    assert 0.3 < small < large < 0.869
    ls = models.spec(models.get_config("llama3-8b", max_seq_len=8192)).layer(0)
    eager = layer_ms(A100, ls, 8192, 1, fused=False, math_path=False, causal=True, dropout=False)
    fused = layer_ms(A100, ls, 8192, 1, fused=True, math_path=False, causal=True, dropout=False)
    assert fused[0] < eager[0] and fused[1] < eager[1]
    assert elementwise_elements(ls, 1, 1, fused=False, dropout=False) > elementwise_elements(ls, 1, 1, True, False)


def test_gpu_presets_use_the_shape_model_and_the_cpu_preset_the_flat_one():
    hw = galvatron.hardware_preset("h100-96g-hbm2e-500w")
    assert hw.num_sms == 132 and hw.memory_bandwidth_gbps == pytest.approx(2400.0)
    assert hw.peak_tflops["bf16"] == pytest.approx(886.0)
    assert hw.overlap_slowdown == pytest.approx(1 + 16 / 132)
    cpu = galvatron.hardware_preset("cpu-gloo", gpus_per_node=2)
    mp = galvatron.model_profile("gpt2-debug", hardware=cpu)
    ls = models.spec(models.get_config("gpt2-debug")).layer(0)
    flat = ls.flops_fwd(1, mp.seq_len) / (0.48e12 * 1.0) * 1e3
    assert mp.layer_types[0].fwd_ms_per_sample[1] == pytest.approx(flat)


def test_loss_working_memory_counts_fp32_logits_and_gradients():
    hw = galvatron.hardware_preset("h100-sxm")
    mp = galvatron.model_profile("llama3-8b", seq_len=8192, hardware=hw, max_degree=2, max_seq_len=8192)
    per_sample = mp.embedding.head_transient_bytes_per_sample
    assert per_sample[1] == 8 * 8192 * 128256 and per_sample[2] == 8 * 8192 * 64128
    plan = Plan.uniform(8, mp.num_layers, dp_type="zero3", global_batch_size=8)
    with_loss = galvatron.estimate(plan, mp, hw).stage_memory[0]["transient_bytes"]
    mp.embedding.head_transient_bytes_per_sample = {}
    without = galvatron.estimate(plan, mp, hw).stage_memory[0]["transient_bytes"]
    assert with_loss == 8 * 8192 * 128256 > without
    fused = galvatron.model_profile("llama3-8b", seq_len=8192, hardware=hw, max_degree=1, kernels="fused",
                                    max_seq_len=8192)
    assert fused.embedding.head_transient_bytes_per_sample[1] == 4 * 8192 * 128256


def test_bad_kernel_and_attention_options_name_the_field():
    with pytest.raises(ValueError, match="kernels: 'jit' is not accepted"):
        galvatron.model_profile("gpt2-debug", kernels="jit")
    with pytest.raises(ValueError, match="attention: 'sparse' is not accepted"):
        galvatron.model_profile("gpt2-debug", attention="sparse")
