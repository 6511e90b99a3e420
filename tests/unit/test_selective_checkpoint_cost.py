"""Selective checkpointing in the cost model and the search: its time and memory lie between
no checkpointing and full checkpointing, its activation bytes are the spec's, profiles keep
its tables through JSON, and the search chooses it when memory is tight."""

import pytest

import galvatron
import galvatron.models as M
from galvatron import Checkpoint, LayerStrategy, Plan
from galvatron.profiles import ModelProfile

GiB = 2**30


@pytest.fixture(scope="module")
def hw():
    return galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)


def _three(mp, hw, **kw):
    return [galvatron.estimate(Plan.uniform(8, mp.num_layers, checkpoint=c, **kw), mp, hw)
            for c in ("none", "selective", "full")]


@pytest.mark.parametrize("kw", [dict(), dict(tp=2), dict(tp=4, sp_kind="megatron"), dict(sp=2),
                                dict(tp=2, dp_type="zero3", pp=2, num_microbatches=4)])
def test_selective_time_and_memory_lie_between_none_and_full(hw, kw):
    mp = galvatron.model_profile("llama2-7b", seq_len=2048, hardware=hw)
    none, sel, full = _three(mp, hw, global_batch_size=8 * 4 // max(1, kw.get("pp", 1)), **kw)
    assert none.step_time_s <= sel.step_time_s < full.step_time_s
    act = [p.stage_memory[0]["activation_bytes"] for p in (none, sel, full)]
    assert act[0] > act[1] > act[2]
    if kw.get("tp", 1) > 1 or kw.get("sp", 1) > 1:  # the recompute replays the collectives
        assert sel.step_time_s > none.step_time_s


def test_selective_recomputes_attention_without_a_fused_kernel(hw):
    """T5's self-attention (trainable bias: SDPA's math fallback) is recomputed: strictly
    slower than no checkpointing even without tp; its fused cross-attention is kept."""
    mp = galvatron.model_profile("t5-base", seq_len=512, hardware=hw)
    none, sel, full = _three(mp, hw, global_batch_size=16)
    assert none.step_time_s < sel.step_time_s < full.step_time_s
    dec = M.spec("t5-base").layer_specs["t5_decoder"]
    assert dec.selective_recompute_flops(1, 512) == 4 * 512 * 512 * dec.num_heads * dec.head_dim


def test_selective_activation_bytes_are_the_spec_bytes(hw):
    """pp=1, one micro-batch: selective minus full activation bytes = the spec's kept tensors
    beyond the input, summed over the layers (bf16, tp=2 with Megatron-SP)."""
    mp = galvatron.model_profile("llama2-7b", seq_len=2048, hardware=hw)
    kw = dict(tp=2, sp_kind="megatron", global_batch_size=4)
    _, sel, full = _three(mp, hw, **kw)
    layer, lb = M.spec("llama2-7b").layer(0), 1  # dp = 4: one sample per device
    per_layer = (layer.act_bytes(lb, 2048, 2, tp=2, sp_kind="megatron", checkpoint="selective")
                 - layer.act_bytes(lb, 2048, 2, tp=2, sp_kind="megatron", checkpoint="full"))
    got = sel.stage_memory[0]["activation_bytes"] - full.stage_memory[0]["activation_bytes"]
    assert got == 32 * per_layer


def test_search_chooses_selective_when_memory_is_tight_and_never_loses_by_it(hw):
    mp = galvatron.model_profile("llama2-7b", seq_len=4096, hardware=hw)
    kw = dict(global_batch_size=16, num_threads=1, uniform_baseline=False, max_pp=1)
    chose = 0
    for gb in (24, 30, 36):
        with_sel = galvatron.search(mp, hw, memory_gb=gb, **kw)
        without = galvatron.search(mp, hw, memory_gb=gb, allow_selective_checkpoint=False, **kw)
        assert with_sel.predicted.samples_per_s >= without.predicted.samples_per_s
        chose += any(s.checkpoint is Checkpoint.SELECTIVE for s in with_sel.plan.layers)
    assert chose


def test_profiles_keep_selective_tables_through_json_and_old_profiles_do_not_offer_it(tmp_path, hw):
    mp = galvatron.model_profile("gpt2-debug", seq_len=64, hardware=hw)
    mp.save(tmp_path / "p.json")
    back = ModelProfile.load(tmp_path / "p.json")
    assert back.layer_types[0].selective_act_bytes_per_sample == mp.layer_types[0].selective_act_bytes_per_sample
    old = ModelProfile.load(tmp_path / "p.json")
    old.layer_types[0].selective_act_bytes_per_sample = {}
    old.layer_types[0].selective_recompute_ms_per_sample = {}
    plan = Plan.uniform(8, 2, checkpoint="selective", global_batch_size=8)
    with pytest.raises(ValueError, match="checkpoint 'selective' needs selective_act_bytes_per_sample"):
        galvatron.estimate(plan, old, hw)
    res = galvatron.search(old, hw, memory_gb=80, global_batch_size=8, num_threads=1)
    assert all(s.checkpoint is not Checkpoint.SELECTIVE for s in res.plan.layers)
    assert LayerStrategy(checkpoint="selective") != LayerStrategy(checkpoint="full")
