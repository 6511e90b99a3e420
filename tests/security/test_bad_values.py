"""Issue 12, items 8 and 9: values that used to end in a traceback (RecursionError, pybind
TypeError, OverflowError, ZeroDivisionError, KeyError) or be silently accepted (Infinity, NaN,
0, 1e300, truncation) are each one ``ValueError`` / one ``galvatron: error:`` line naming the
file and the field. Every case here failed on the code before the fix."""

from __future__ import annotations

import json

import pytest

import galvatron
from galvatron import ModelProfile, Plan
from galvatron.cli import main
from galvatron.plan_io import load_plan as load_any_plan
from galvatron.profiles import HardwareProfile, hardware_from_galvatron, model_from_galvatron
from tests.unit.test_galvatron_format import G2_PLAN
from tests.unit.test_search_api import write_galvatron_profiles


@pytest.fixture(scope="module")
def hw():
    return galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=4)


@pytest.fixture(scope="module")
def mp(hw):
    return galvatron.model_profile("gpt2-debug", hardware=hw)


def refused(load, path, *fields):
    with pytest.raises(ValueError) as info:
        load(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    for f in fields:
        assert f in msg, msg
    assert "\n" not in msg
    return msg


def one_line_error(argv, capsys, *fields):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("galvatron: error: ") and err.count("\n") == 1, err
    for f in fields:
        assert f in err, err
    return err


# ---------------------------------------------------------------------------- plans
def test_plan_nested_100000_deep_is_refused_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"version": 1, "layers": ' + "[" * 100_000 + "]" * 100_000 + "}")
    refused(Plan.load, path, "nested too deeply")
    refused(load_any_plan, path, "nested too deeply")


def test_plan_with_a_repeated_key_is_refused(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"version": 1, "world_size": 1, "world_size": 2, "layers": [{}]}')
    refused(Plan.load, path, "'world_size' appears twice")


@pytest.mark.parametrize("field, value, words", [
    ("world_size", 2**70, "world_size"),
    ("global_batch_size", 4611686018427387904, "global_batch_size"),
    ("num_microbatches", 1e308, "num_microbatches"),
    ("pp", True, "pp"),
    ("schedule", [1], "schedule"),
])
def test_plan_fields_out_of_range_name_the_field(tmp_path, field, value, words):
    d = Plan.uniform(2, 2).to_dict()
    d[field] = value
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(d))
    refused(Plan.load, path, words)


@pytest.mark.parametrize("changes, field", [
    ({"chunks": 1e308}, "chunks"),
    ({"chunks": 7.9}, "chunks"),
    ({"global_bsz": "nan"}, "global_bsz"),
    ({"world_size": 2**70}, "world_size"),
    ({"vsp": 5}, "vsp"),
    ({"pipeline_type": ["gpipe"]}, "pipeline_type"),
])
def test_galvatron2_plan_nonsense_is_refused(tmp_path, changes, field):
    path = tmp_path / "galvatron_config_x_2nodes_4gpus_per_node_24GB_bf16.json"
    path.write_text(json.dumps({**G2_PLAN, **changes}))
    refused(load_any_plan, path, field)


# ---------------------------------------------------------------------------- hardware profiles
@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["collectives"][0].update(bandwidth_gbps=float("inf")), "collectives[0].bandwidth_gbps"),
    (lambda d: d["collectives"][0].update(bandwidth_gbps=float("nan")), "collectives[0].bandwidth_gbps"),
    (lambda d: d["collectives"][0].update(alpha_ms=-1.0), "collectives[0].alpha_ms"),
    (lambda d: d["collectives"][0].update(group_size=2**70), "collectives[0].group_size"),
    (lambda d: d["peak_tflops"].update(bf16=0), "peak_tflops.bf16"),
    (lambda d: d["peak_tflops"].update(bf16=float("nan")), "peak_tflops.bf16"),
    (lambda d: d.update(device_memory_bytes=2**70), "device_memory_bytes"),
    (lambda d: d.update(overlap_slowdown=float("inf")), "overlap_slowdown"),
    (lambda d: d.update(matmul_efficiency=0), "matmul_efficiency"),
    (lambda d: d.update(num_nodes="2"), "num_nodes"),
])
def test_hardware_profile_nonsense_is_refused(tmp_path, hw, mutate, field):
    d = json.loads(json.dumps(hw.to_dict()))  # a copy: the edit must not reach the fixture
    mutate(d)
    path = tmp_path / "hw.json"
    path.write_text(json.dumps(d))  # json writes NaN / Infinity literals, as a hostile file may
    refused(HardwareProfile.load, path, field)


# ---------------------------------------------------------------------------- model profiles
@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["layer_types"][0].update(param_count=2**70), "layer_types[0].param_count"),
    (lambda d: d["layer_types"][0]["fwd_ms_per_sample"].update({"1": 1e300}), "fwd_ms_per_sample[1]"),
    (lambda d: d["layer_types"][0]["bwd_ms_per_sample"].update({"1": float("nan")}), "bwd_ms_per_sample[1]"),
    (lambda d: d.update(seq_len=0), "seq_len"),
    (lambda d: d["embedding"].update(carry_bytes_per_sample=2**70), "embedding.carry_bytes_per_sample"),
    (lambda d: d["layer_types"][0]["act_bytes_per_sample"]["none"].update({"1": -5}), "act_bytes_per_sample.none[1]"),
    (lambda d: d["layer_types"][0].update(name=["x"]), "layer_types[0].name"),
    (lambda d: d.update(layer_type_of=[0, 7]), "layer_type_of[1]"),
    (lambda d: d.update(layer_types="abc"), "layer_types"),
])
def test_model_profile_nonsense_is_refused(tmp_path, mp, mutate, field):
    d = mp.to_dict()
    mutate(d)
    path = tmp_path / "mp.json"
    path.write_text(json.dumps(d))
    refused(ModelProfile.load, path, field)


def test_profile_magnitudes_that_would_overflow_int64_are_refused(mp, hw):
    """Each value within its own bound, but activations x batch beyond int64 bytes: refused by
    the C++ core (std::invalid_argument -> ValueError), never a silent wrap-around."""
    d = mp.to_dict()
    for lt in d["layer_types"]:
        for table in lt["act_bytes_per_sample"].values():
            for k in table:
                table[k] = 2**44
    big = ModelProfile.from_dict(d)
    with pytest.raises(ValueError, match="beyond the 2\\^60 bytes"):
        galvatron.search(big, hw, global_batch_size=2**20, num_threads=1, uniform_baseline=False)
    with pytest.raises(ValueError, match="beyond the 2\\^60 bytes"):
        galvatron.estimate(Plan.uniform(4, big.num_layers, global_batch_size=2**20), big, hw)


# ---------------------------------------------------------------------------- Galvatron-2 profiles
def g2_model(tmp_path):
    return model_from_galvatron(tmp_path / "computation_profiling_bf16_toy_all.json",
                                       tmp_path / "memory_profiling_bf16_toy_all.json", seq_len=512,
                                       model="toy", num_layers=4, num_heads=8, hidden_size=256)


def test_galvatron2_repeated_batch_size_is_refused_not_a_zero_division(tmp_path):
    write_galvatron_profiles(tmp_path)
    path = tmp_path / "computation_profiling_bf16_toy_all.json"
    path.write_text(json.dumps({"layertype_0_bsz4_seq512": 2.0, "layertype_0_bsz04_seq512": 2.1,
                                "layertype_other_bsz4_seq512": 1.0}))
    with pytest.raises(ValueError, match="both give batch size 4") as info:
        g2_model(tmp_path)
    assert str(path) in str(info.value)


def test_galvatron2_memory_file_that_is_a_list_is_refused_not_a_type_error(tmp_path):
    write_galvatron_profiles(tmp_path)
    path = tmp_path / "memory_profiling_bf16_toy_all.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="must be a JSON object") as info:
        g2_model(tmp_path)
    assert str(path) in str(info.value)


def test_galvatron2_memory_file_without_tp1_is_refused_not_a_key_error(tmp_path):
    write_galvatron_profiles(tmp_path)
    path = tmp_path / "memory_profiling_bf16_toy_all.json"
    d = json.loads(path.read_text())
    del d["other_memory_pp_on_first_sp"]["512"]["model_states"]["1"]
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="model_states: no entry for degree 1") as info:
        g2_model(tmp_path)
    assert str(path) in str(info.value)


def test_galvatron2_overlap_coefficient_nan_is_refused_not_turned_into_one(tmp_path):
    write_galvatron_profiles(tmp_path)
    (tmp_path / "overlap_coefficient.json").write_text('{"overlap_coe": NaN}')
    with pytest.raises(ValueError, match="overlap_coe must be a finite number") as info:
        hardware_from_galvatron(tmp_path, num_nodes=1, gpus_per_node=4, device_memory_gb=16)
    assert "overlap_coefficient.json" in str(info.value)


@pytest.mark.parametrize("name, text, field", [
    ("allreduce_bandwidth_1nodes_4gpus_per_node.json", '{"allreduce_size_2_consec_1": "fast"}',
     "allreduce_size_2_consec_1"),
    ("allreduce_bandwidth_1nodes_4gpus_per_node.json", '{"allreduce_size_2_consec_1": Infinity}',
     "allreduce_size_2_consec_1"),
    ("p2p_bandwidth_1nodes_4gpus_per_node.json", '{"pp_size_2": 0}', "pp_size_2"),
    ("sp_time_1nodes_4gpus_per_node.json", '{"all2all_size_2_1MB_time": [1]}', "all2all_size_2_1MB_time"),
])
def test_galvatron2_hardware_errors_name_file_and_key(tmp_path, name, text, field):
    write_galvatron_profiles(tmp_path)
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError) as info:
        hardware_from_galvatron(tmp_path, num_nodes=1, gpus_per_node=4, device_memory_gb=16)
    assert name in str(info.value) and field in str(info.value), str(info.value)


# ---------------------------------------------------------------------------- command lines
@pytest.mark.parametrize("args, field", [
    (["--global-batch-size", "4611686018427387904"], "--global-batch-size"),
    (["--global-batch-size", "8:4:0"], "--global-batch-size"),
    (["--memory-gb", "inf"], "memory_gb"),
    (["--memory-gb", "nan"], "memory_gb"),
    (["--memory-gb", "-3"], "memory_gb"),
    (["--memory-headroom-gb", "inf"], "memory_headroom_gb"),
])
def test_search_cli_bad_numbers_are_one_line(args, field, capsys):
    one_line_error(["search", "--model", "gpt2-debug", "--gpus-per-node", "2", *args], capsys, field)


def test_search_api_huge_batch_is_a_value_error(mp, hw):
    with pytest.raises(ValueError, match="global_batch_size"):
        galvatron.search(mp, hw, global_batch_size=4611686018427387904)
    with pytest.raises(ValueError, match="memory_gb"):
        galvatron.search(mp, hw, memory_gb=float("inf"))


@pytest.mark.parametrize("value", ["inf", "-3", "0", "nan"])
def test_visualize_bad_memory_budget_writes_no_report(tmp_path, capsys, value):
    plan = tmp_path / "plan.json"
    Plan.uniform(2, 4, global_batch_size=4).save(plan)
    out = tmp_path / "report.html"
    one_line_error(["visualize", str(plan), "--model", "gpt2-debug", "--memory-gb", value, "--out", str(out)],
                   capsys, "--memory-gb")
    assert not out.exists()


def test_data_prepare_out_an_existing_file_is_one_line(tmp_path, capsys):
    text = tmp_path / "a.txt"
    text.write_text("hello world")
    out = tmp_path / "taken"
    out.write_text("not a directory")
    one_line_error(["data", "prepare", str(text), "--out", str(out)], capsys, "--out", "not a directory")
    assert out.read_text() == "not a directory"


def test_metrics_nested_100000_deep_is_refused_not_a_recursion_error(tmp_path):
    from galvatron.visualize import load_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl:2: not usable JSON"):
        load_metrics(path)
