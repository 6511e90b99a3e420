"""The Python search API: results agree with estimate, more memory never hurts, infeasible
budgets explain themselves, options are validated, profiles round-trip and import."""

import json

import pytest

import galvatron
from galvatron import LayerStrategy, Plan
from galvatron.profiles import (
    HardwareProfile,
    ModelProfile,
    hardware_from_galvatron,
    model_from_galvatron,
)

GiB = 2**30


@pytest.fixture(scope="module")
def hw():
    return galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)


@pytest.fixture(scope="module")
def mp(hw):
    return galvatron.model_profile("llama2-7b", seq_len=2048, hardware=hw)


def test_search_result_is_consistent_with_estimate(mp, hw):
    res = galvatron.search(mp, hw, memory_gb=36, global_batch_size=32, num_threads=1)
    res.plan.validate(world_size=8, num_layers=32)
    again = galvatron.estimate(res.plan, mp, hw)
    assert again.step_time_s == pytest.approx(res.predicted.step_time_s, rel=1e-12)
    assert again.max_peak_memory_bytes == res.predicted.max_peak_memory_bytes <= 36 * GiB
    assert res.plan.predicted["samples_per_s"] == pytest.approx(res.predicted.samples_per_s)
    assert res.best_uniform is not None and len(set(res.best_uniform.plan.layers)) == 1
    assert res.predicted.samples_per_s >= res.best_uniform.predicted.samples_per_s
    assert res.speedup_over_uniform >= 1.0
    assert res.stats["tasks"] > 0 and res.stats["dp_sweeps"] > 0 and res.search_time_s > 0


def test_more_memory_never_gives_a_slower_plan(mp, hw):
    speeds = [galvatron.search(mp, hw, memory_gb=g, global_batch_size=16, num_threads=1,
                               uniform_baseline=False).predicted.samples_per_s for g in (20, 28, 40, 80)]
    assert speeds == sorted(speeds)


def test_infeasible_budget_names_the_smallest_memory_that_fits(mp, hw):
    with pytest.raises(ValueError, match="no plan in the search space fits in 4.00 GiB") as info:
        galvatron.search(mp, hw, memory_gb=4, global_batch_size=8, num_threads=1)
    text = str(info.value)
    need = float(text.split("needs memory_gb >= ")[1].split()[0].rstrip(","))
    assert "world_size=8" in text  # the plan that needs it is printed
    res = galvatron.search(mp, hw, memory_gb=need + 0.01, global_batch_size=8, num_threads=1, uniform_baseline=False)
    assert res.predicted.max_peak_memory_bytes <= (need + 0.01) * GiB


def test_headroom_reduces_the_budget(mp, hw):
    res = galvatron.search(mp, hw, memory_gb=40, memory_headroom_gb=8, global_batch_size=16, num_threads=1,
                           uniform_baseline=False)
    assert res.predicted.max_peak_memory_bytes <= 32 * GiB


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pp_split="balanced"), "pp_split: 'balanced' is not accepted; accepted: 'searched', 'even'"),
        (dict(global_batch_size=0), "global_batch_size must be an integer from 1 to"),
        (dict(global_batch_size="many"), "global_batch_size must be an integer, a list or a range"),
        (dict(num_microbatches=[0]), "num_microbatches\\[0\\] must be an integer from 1 to"),
        (dict(pp_degrees=[3]), "pp_degrees: 3 does not divide world_size"),
        (dict(schedules=["zb"]), "schedules: 'zb' is not accepted; accepted: 'gpipe', '1f1b', 'interleaved_1f1b'"),
        (dict(dp_types=["zero4"]), "dp_types: 'zero4' is not accepted; accepted: 'ddp', 'zero1'"),
        (dict(dp_types="zero3"), "dp_types and schedules must be lists"),
        (dict(memory_gb=-1), "memory_gb must be a finite number in \\[0, "),
        (dict(memory_gb=8, memory_headroom_gb=9), "memory_gb - memory_headroom_gb must be > 0"),
    ],
)
def test_bad_search_options_are_rejected_naming_the_field(mp, hw, kwargs, message):
    kwargs = {"global_batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        galvatron.search(mp, hw, num_threads=1, **kwargs)


def test_world_size_mismatch_between_plan_and_hardware(mp, hw):
    with pytest.raises(ValueError, match="plan is for 4 devices but the job has 8"):
        galvatron.estimate(Plan.uniform(4, 32, global_batch_size=4), mp, hw)


def test_batch_ranges_and_fixed_microbatches(mp, hw):
    res = galvatron.search(mp, hw, memory_gb=40, global_batch_size=range(8, 33, 8), num_microbatches=[2],
                           num_threads=1, uniform_baseline=False, pp_split="even")
    assert res.plan.num_microbatches == 2 and res.plan.global_batch_size in (8, 16, 24, 32)


def test_presets_and_analytic_profiles_validate_their_input(hw):
    with pytest.raises(ValueError, match="hardware preset 'tpu' is unknown; accepted: a100-40g-sxm"):
        galvatron.hardware_preset("tpu")
    with pytest.raises(ValueError, match="gpus_per_node must be an integer >= 1"):
        galvatron.hardware_preset("h100-sxm", gpus_per_node=0)
    with pytest.raises(ValueError, match="model name 'gpt5' is unknown"):
        galvatron.model_profile("gpt5", hardware=hw)
    with pytest.raises(ValueError, match="precision: 'int8'"):
        galvatron.model_profile("gpt2-debug", precision="int8")


def test_profiles_round_trip_through_json(tmp_path, mp, hw):
    hw.save(tmp_path / "hw.json")
    mp.save(tmp_path / "mp.json")
    hw2 = HardwareProfile.load(tmp_path / "hw.json")
    mp2 = ModelProfile.load(tmp_path / "mp.json")
    assert hw2 == hw
    assert mp2.to_dict() == mp.to_dict()
    plan = Plan.uniform(8, 32, tp=2, dp_type="zero3", global_batch_size=8)
    assert galvatron.estimate(plan, mp2, hw2) == galvatron.estimate(plan, mp, hw)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(kind="model"), "kind: expected 'hardware'"),
        (lambda d: d.update(version=7), "version: 7 is not supported"),
        (lambda d: d.pop("collectives"), "collectives: missing"),
        (lambda d: d["collectives"][0].pop("alpha_ms"), "collectives\\[0\\]: missing key 'alpha_ms'"),
        (lambda d: d["collectives"][0].update(bandwidth_gbps=0), "bandwidth_gbps must be a finite number in \\[1e-06"),
        (lambda d: d.update(overlap_slowdown=0.5), "overlap_slowdown must be a finite number in \\[1, 100\\]"),
    ],
)
def test_bad_hardware_profiles_name_the_field(tmp_path, hw, mutate, message):
    d = hw.to_dict()
    mutate(d)
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message) as info:
        HardwareProfile.load(path)
    assert str(path) in str(info.value)


def test_bad_model_profiles_name_the_field(tmp_path, mp):
    d = mp.to_dict()
    d["layer_types"][0]["fwd_ms_per_sample"] = {"1": 1.0, "4": 0.25}
    path = tmp_path / "mp.json"
    path.write_text(json.dumps(d))
    # any degrees are accepted (not only powers of two), but every table must cover them
    with pytest.raises(ValueError, match="bwd_ms_per_sample: degrees \\[2, 8\\] are not among the profiled "
                                         "degrees \\[1, 4\\]"):
        ModelProfile.load(path)
    d["layer_types"][0]["fwd_ms_per_sample"] = {"0": 1.0}
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="degrees \\[0\\] are not positive integers"):
        ModelProfile.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="malformed JSON"):
        ModelProfile.load(path)


def write_galvatron_profiles(d):
    """Galvatron-2 profile files in its own format, written by the test."""
    (d / "allreduce_bandwidth_1nodes_4gpus_per_node.json").write_text(json.dumps({
        "allreduce_size_4_consec_1": 100.0, "allreduce_size_2_consec_1": 80.0, "allreduce_size_2_consec_0": 60.0}))
    (d / "p2p_bandwidth_1nodes_4gpus_per_node.json").write_text(json.dumps({"pp_size_2": 50.0, "pp_size_4": 40.0}))
    (d / "overlap_coefficient.json").write_text(json.dumps({"overlap_coe": 1.2}))
    sp = {}
    for n in (2, 4):
        for mb in (1, 2, 4, 8, 16):
            sp[f"all2all_size_{n}_{mb}MB_time"] = 0.05 + mb * 0.01 * n
            sp[f"allreduce_size_{n}_{mb}MB_time"] = 0.04 + mb * 0.02
    (d / "sp_time_1nodes_4gpus_per_node.json").write_text(json.dumps(sp))
    comp = {f"layertype_0_bsz{b}_seq512": (2.0 + 6.0 * b) / b for b in (1, 2, 4)}
    comp.update({f"layertype_other_bsz{b}_seq512": (1.0 + 2.0 * b) / b for b in (1, 2, 4)})
    (d / "computation_profiling_bf16_toy_all.json").write_text(json.dumps(comp))
    layer = {"512": {"parameter_size": 64.0, "tp_activation_per_bsz_dict": {"1": 40.0, "2": 22.0, "4": 12.0, "checkpoint": 2.0}}}
    other = {"512": {"model_states": {"1": 256.0, "2": 128.0, "4": 64.0}, "activation": {"1": 8.0, "2": 4.0, "4": 2.0}}}
    (d / "memory_profiling_bf16_toy_all.json").write_text(json.dumps({
        "layertype_0_sp": layer, "other_memory_pp_on_first_sp": other, "other_memory_pp_on_last_sp": other}))


def test_galvatron_profile_import(tmp_path):
    write_galvatron_profiles(tmp_path)
    hw = hardware_from_galvatron(tmp_path, num_nodes=1, gpus_per_node=4, device_memory_gb=16)
    # Bus bandwidth 80 MB/ms = 83.886 GB/s; algorithm bandwidth of a 2-rank all-gather = bus * 2 / 1,
    # of a 2-rank all-reduce = bus * 2 / 2.
    assert hw.collective("all_gather", 2, "consecutive").bandwidth_gbps == pytest.approx(2 * 80 * 2**20 / 1e6)
    assert hw.collective("all_reduce", 2, "strided").bandwidth_gbps == pytest.approx(60 * 2**20 / 1e6)
    # Measured sp_time series replace the derived entries: 0.04 ms + 0.02 ms/MB.
    ar2 = hw.collective("all_reduce", 2, "consecutive")
    assert ar2.alpha_ms == pytest.approx(0.04) and ar2.bandwidth_gbps == pytest.approx(2**20 / 0.02e-3 / 1e9)
    a2a = hw.collective("all_to_all", 4, "consecutive")  # fitted from sp_time: 0.04 ms/MB
    assert 1.0 / (a2a.bandwidth_gbps * 1e6) * 2**20 == pytest.approx(0.04, rel=1e-6)
    assert a2a.alpha_ms == pytest.approx(0.05, rel=1e-6)
    assert hw.overlap_slowdown == pytest.approx(1.2)
    mp = model_from_galvatron(tmp_path / "computation_profiling_bf16_toy_all.json",
                                     tmp_path / "memory_profiling_bf16_toy_all.json", seq_len=512, model="toy",
                                     num_layers=4, num_heads=8, hidden_size=256)
    lt = mp.layer_types[0]
    assert lt.param_count == 16 * 2**20  # 64 MB of fp32
    assert lt.fwd_ms_per_sample[1] == pytest.approx(6.0) and lt.fwd_ms_fixed == pytest.approx(2.0)
    assert lt.fwd_ms_per_sample[4] == pytest.approx(1.5)
    assert lt.act_bytes_per_sample["megatron"][2] == 22 * 2**20
    assert mp.embedding.embed_param_count == 16 * 2**20  # 256 MB at 16 B/param
    res = galvatron.search(mp, hw, memory_gb=16, global_batch_size=8, num_threads=1)
    assert res.predicted.samples_per_s > 0
    with pytest.raises(ValueError, match="num_layers is needed"):
        model_from_galvatron(tmp_path / "computation_profiling_bf16_toy_all.json",
                                    tmp_path / "memory_profiling_bf16_toy_all.json", seq_len=512)


def test_hand_written_plan_estimate(mp, hw):
    plan = Plan(world_size=8, layers=(LayerStrategy(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint=True),) * 16
                + (LayerStrategy(sp=2, sp_kind="ulysses", dp_type="zero2"),) * 16, pp=2, stage_layers=(20, 12),
                num_microbatches=8, global_batch_size=32, embedding=LayerStrategy(tp=4))
    pred = galvatron.estimate(plan, mp, hw)
    assert len(pred.stage_memory) == 2 and len(pred.layer_timing_ms) == 32
    assert pred.breakdown_ms["redistribution_ms"] > 0  # tp2+msp -> ulysses2 changes layout
    assert "stage 1 memory" in pred.summary()


@pytest.mark.parametrize("name", ["t5-debug", "swin-debug", "bert-debug", "vit-debug", "gpt2-debug"])
def test_every_family_searches_including_several_layer_types(name):
    hw = galvatron.hardware_preset("a100-40g-sxm", num_nodes=1, gpus_per_node=4)
    mp = galvatron.model_profile(name, hardware=hw)
    assert mp.embedding.embed_param_count >= 0 and mp.embedding.head_param_count >= 0
    res = galvatron.search(mp, hw, memory_gb=8, global_batch_size=8, num_threads=1, uniform_baseline=False)
    res.plan.validate(world_size=4, num_layers=mp.num_layers)
    assert galvatron.estimate(res.plan, mp, hw).step_time_s == pytest.approx(res.predicted.step_time_s)
    if name in ("t5-debug", "swin-debug"):
        assert len(mp.layer_types) > 1


def test_same_input_same_plan_whatever_the_thread_count(mp, hw):
    plans = [galvatron.search(mp, hw, memory_gb=30, global_batch_size=[16, 32], num_threads=t,
                              uniform_baseline=False).plan for t in (1, 2, 4)]
    assert plans[0] == plans[1] == plans[2]


def test_galvatron_model_import_takes_the_shape_from_a_known_model_name(tmp_path):
    write_galvatron_profiles(tmp_path)
    mp = model_from_galvatron(tmp_path / "computation_profiling_bf16_toy_all.json",
                                     tmp_path / "memory_profiling_bf16_toy_all.json", seq_len=512, model="gpt2-small")
    assert mp.num_layers == 12 and mp.layer_types[0].num_heads == 12
    assert mp.layer_types[0].carry_bytes_per_sample == 512 * 768 * 2


def test_swin_layers_never_get_sequence_parallelism():
    hw = galvatron.hardware_preset("a100-40g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("swin-base", hardware=hw)
    res = galvatron.search(mp, hw, memory_gb=8, global_batch_size=64, num_threads=1, uniform_baseline=False)
    assert {s.sp_kind.value for s in res.plan.layers} == {"none"}
    bad = Plan.uniform(8, mp.num_layers, sp=2, global_batch_size=8)
    with pytest.raises(ValueError, match="needs the whole sequence; accepted sp_kind: none"):
        galvatron.estimate(bad, mp, hw)


def test_allow_sequence_parallel_is_one_name_and_old_json_still_reads(tmp_path):
    """The profile field has the core's name (allow_sequence_parallel); files written under
    its old name (sequence_parallel) load the same; both at once are refused."""
    hw = galvatron.hardware_preset("a100-40g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("swin-debug", hardware=hw, max_degree=2)
    assert [lt.allow_sequence_parallel for lt in mp.layer_types] == [False] * len(mp.layer_types)
    d = mp.to_dict()
    assert all("allow_sequence_parallel" in lt and "sequence_parallel" not in lt for lt in d["layer_types"])
    assert [t.allow_sequence_parallel for t in mp.to_tables().layer_types] == [False] * len(mp.layer_types)
    for lt in d["layer_types"]:
        lt["sequence_parallel"] = lt.pop("allow_sequence_parallel")
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    assert ModelProfile.load(old) == mp
    d["layer_types"][0]["allow_sequence_parallel"] = False
    with pytest.raises(ValueError, match=r"layer_types\[0\]: give allow_sequence_parallel or its old name"):
        ModelProfile.from_dict(d)
    d["layer_types"][0]["sequence_parallel"] = "yes"
    del d["layer_types"][0]["allow_sequence_parallel"]
    with pytest.raises(ValueError, match=r"layer_types\[0\]\.allow_sequence_parallel"):
        ModelProfile.from_dict(d)
