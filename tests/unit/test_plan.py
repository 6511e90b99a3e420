"""Plan dataclasses: JSON round trip, every validation rule, uniform plans, summaries."""

import json

import pytest

from galvatron import DpType, LayerStrategy, Plan, Precision, Schedule, SpKind


def mixed_plan() -> Plan:
    layers = (
        LayerStrategy(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint=True),
        LayerStrategy(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint=True),
        LayerStrategy(sp=2, sp_kind="ulysses", dp_type="zero1"),
        LayerStrategy(tp=4, dp_type="ddp", tp_consecutive=False),
        LayerStrategy(dp_type="zero2"),
        LayerStrategy(dp_type="zero2"),
    )
    return Plan(
        world_size=8, layers=layers, pp=2, stage_layers=(2, 4), schedule="gpipe",
        num_microbatches=4, global_batch_size=32, embedding=LayerStrategy(tp=2),
        precision="fp32", predicted={"step_time_s": 0.25, "samples_per_s": 128.0},
    )


def test_json_round_trip_is_lossless(tmp_path):
    plan = mixed_plan()
    path = tmp_path / "plan.json"
    plan.save(path)
    loaded = Plan.load(path)
    assert loaded == plan
    assert json.loads(path.read_text())["version"] == 1
    assert loaded.layers[2].sp_kind is SpKind.ULYSSES
    assert loaded.schedule is Schedule.GPIPE and loaded.precision is Precision.FP32


def test_enums_accept_strings_and_reject_unknown_values_listing_accepted():
    assert LayerStrategy(dp_type="zero1").dp_type is DpType.ZERO1
    with pytest.raises(ValueError, match="dp_type.*'zero4'.*accepted: 'ddp', 'zero1', 'zero2', 'zero3'"):
        LayerStrategy(dp_type="zero4")
    with pytest.raises(ValueError, match="schedule.*accepted: 'gpipe', '1f1b', 'interleaved_1f1b'"):
        Plan.uniform(4, 4, schedule="pipedream")


def test_uniform_plan_splits_layers_and_picks_a_valid_batch():
    plan = Plan.uniform(8, 10, pp=4, tp=2, dp_type="zero3", checkpoint=True, num_microbatches=4)
    assert plan.stage_layers == (3, 3, 2, 2)
    assert plan.stage_of_layer() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert plan.dp_degree(plan.layers[0]) == 1
    assert plan.global_batch_size == 4
    assert all(s == LayerStrategy(tp=2, dp_type="zero3", checkpoint=True) for s in plan.layers)
    inter = Plan.uniform(4, 8, pp=2, schedule="interleaved_1f1b", virtual_stages=2, num_microbatches=4)
    assert inter.stage_layers == (2, 2, 2, 2) and inter.stage_of_layer() == [0, 0, 1, 1, 0, 0, 1, 1]


def _bad(**changes):
    return mixed_plan().replace(**changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(world_size=0), "world_size must be >= 1"),
        (dict(pp=3, stage_layers=(2, 2, 2)), "pp=3 does not divide world_size=8"),
        (dict(pp=0), "pp must be >= 1"),
        (dict(num_microbatches=0), "num_microbatches must be >= 1"),
        (dict(num_microbatches=5), "global_batch_size=32 is not divisible by num_microbatches=5"),
        (dict(global_batch_size=-4), "global_batch_size must be >= 1"),
        (dict(layers=()), "layers: a plan needs at least one layer"),
        (dict(stage_layers=(2, 2)), "stage_layers sums to 4 but the plan has 6 layers"),
        (dict(stage_layers=(6,)), "stage_layers has 1 entries; expected pp\\*virtual_stages=2"),
        (dict(stage_layers=(0, 6)), "stage_layers\\[0\\] must be an integer >= 1"),
        (dict(virtual_stages=2, stage_layers=(1, 2, 1, 2)), "virtual_stages=2 needs schedule 'interleaved_1f1b'"),
        (dict(schedule="interleaved_1f1b"), "virtual_stages must be >= 2"),
        (dict(schedule="interleaved_1f1b", virtual_stages=2, stage_layers=(1, 2, 1, 2), num_microbatches=1,
              global_batch_size=8), "num_microbatches=1 must be a multiple of pp=2"),
        (dict(global_batch_size=4), "micro-batch size 1 .* not divisible by its data-parallel degree dp=2"),
        (dict(embedding=LayerStrategy(tp=8)), "embedding: tp\\*sp=8 does not divide the 4 devices"),
        (dict(embedding=LayerStrategy(checkpoint=True)), "embedding.checkpoint is not supported"),
        (dict(predicted=[1, 2]), "predicted must be a JSON object"),
    ],
)
def test_each_plan_rule_rejects_a_bad_plan_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        _bad(**changes).validate()


@pytest.mark.parametrize(
    "strategy, message",
    [
        (LayerStrategy(tp=0), "layers\\[0\\].tp must be >= 1"),
        (LayerStrategy(sp=2), "layers\\[0\\].sp=2 needs sp_kind 'ulysses'"),
        (LayerStrategy(sp=1, sp_kind="ulysses"), "layers\\[0\\].sp must be >= 2"),
        (LayerStrategy(tp=1, sp_kind="megatron"), "layers\\[0\\].sp_kind 'megatron' needs tp >= 2"),
        (LayerStrategy(tp=3), "layers\\[0\\]: tp\\*sp=3 does not divide the 4 devices"),
    ],
)
def test_each_layer_rule_rejects_a_bad_strategy(strategy, message):
    plan = mixed_plan()
    with pytest.raises(ValueError, match=message):
        plan.replace(layers=(strategy,) + plan.layers[1:]).validate()


def test_validate_checks_world_size_and_layer_count_of_the_job():
    plan = mixed_plan()
    assert plan.validate(world_size=8, num_layers=6) is plan
    with pytest.raises(ValueError, match="plan is for 8 devices but the job has 16"):
        plan.validate(world_size=16)
    with pytest.raises(ValueError, match="6 layer strategies but the model has 12 layers"):
        plan.validate(num_layers=12)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "malformed JSON at line 1 column 2"),
        ("[1, 2]", "a plan must be a JSON object"),
        ('{"world_size": 4}', "version: missing"),
        ('{"version": 99, "world_size": 4, "layers": []}', "version: 99 is not supported; accepted: 1"),
        ('{"version": 1, "layers": []}', "world_size: missing"),
        ('{"version": 1, "world_size": 4, "layers": [{"tp": 2, "zero": 3}]}', "layers\\[0\\]: unknown keys \\['zero'\\]"),
        ('{"version": 1, "world_size": 4, "layers": [{}], "pipeline": 2}', "unknown keys \\['pipeline'\\]"),
        ('{"version": 1, "world_size": 4, "layers": "all"}', "layers must be a list"),
        ('{"pp_deg": 1, "tp_sizes_enc": "1"}', "looks like a Galvatron-2 plan"),
    ],
)
def test_loading_malformed_files_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        Plan.load(path)
    assert str(path) in str(info.value)


def test_missing_file_and_unwritable_destination_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        Plan.load(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="cannot write"):
        mixed_plan().save(tmp_path / "no-such-dir" / "plan.json")


def test_summary_groups_identical_layers_per_stage():
    text = mixed_plan().summary()
    assert "0      0-1         2+msp" in text
    assert "1      4-5" in text and "zero2" in text
    assert "ulysses" in text and "strided" in text
    assert "predicted: step 250.0 ms, 128.00 samples/s" in text


def test_checkpoint_is_none_selective_or_full_and_json_booleans_still_read():
    from galvatron.plan import Checkpoint

    assert LayerStrategy(checkpoint=True).checkpoint is Checkpoint.FULL
    assert LayerStrategy(checkpoint=False).checkpoint is Checkpoint.NONE
    assert LayerStrategy(checkpoint="selective").checkpoint is Checkpoint.SELECTIVE
    assert not Checkpoint.NONE and Checkpoint.SELECTIVE and Checkpoint.FULL
    plan = Plan.uniform(4, 6, tp=2, checkpoint="selective")
    assert all(s.checkpoint is Checkpoint.SELECTIVE for s in plan.layers)
    assert plan.embedding.checkpoint is Checkpoint.NONE
    d = plan.to_dict()
    assert d["layers"][0]["checkpoint"] == "selective"
    assert Plan.from_dict(d) == plan
    d["layers"][1]["checkpoint"] = True  # a version-1 file written before the enum
    d["layers"][2]["checkpoint"] = False
    back = Plan.from_dict(d)
    assert [s.checkpoint for s in back.layers[:3]] == [Checkpoint.SELECTIVE, Checkpoint.FULL,
                                                         Checkpoint.NONE]
    assert "sel-ckpt" in plan.layers[0].describe() and "selective" in plan.summary()
    for bad in (1, "partial", None):
        d["layers"][0]["checkpoint"] = bad
        with pytest.raises(ValueError, match=r"layers\[0\]\.checkpoint: .* accepted: 'none', "
                                             r"'selective', 'full'"):
            Plan.from_dict(d)
    with pytest.raises(ValueError, match="checkpoint: 1 is not accepted"):
        LayerStrategy(checkpoint=1)
    with pytest.raises(ValueError, match="embedding.checkpoint is not supported"):
        plan.replace(embedding=LayerStrategy(tp=2, checkpoint="selective")).validate()
