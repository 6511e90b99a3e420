"""Galvatron-2 plan files: import, export, round trips, world-size resolution, errors."""

import json

import pytest

from galvatron import DpType, LayerStrategy, Plan, Schedule, SpKind
from galvatron.plan_io import load_plan, read_galvatron2_plan, write_galvatron2_plan

# A plan in Galvatron-2's format, written for this test (4 layers, 8 devices, pp=2).
G2_PLAN = {
    "pp_deg": 2,
    "tp_sizes_enc": "2,2,4,1",
    "tp_consecutive_flags": "1,0,1,1",
    "dp_types_enc": "0,1,0,1",
    "use_sp": "0,0,1,0",
    "checkpoint": "1,0,0,1",
    "global_bsz": 32,
    "chunks": 4,
    "pp_division": "1,3",
    "pipeline_type": "gpipe",
    "default_dp_type": "zero2",
    "vtp": 4,
    "vsp": 0,
    "embed_sdp": 1,
}


def write(tmp_path, d, name="galvatron_config_test_2nodes_4gpus_per_node_24GB_fp16.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return path


def test_import_maps_every_field(tmp_path):
    plan = read_galvatron2_plan(write(tmp_path, G2_PLAN), megatron_sp=False)
    assert plan.world_size == 8  # from the file name: 2 nodes x 4 GPUs
    assert plan.pp == 2 and plan.stage_layers == (1, 3) and plan.schedule is Schedule.GPIPE
    assert plan.num_microbatches == 4 and plan.global_batch_size == 32
    assert plan.precision.value == "fp16"
    assert plan.layers[0] == LayerStrategy(tp=2, dp_type="zero2", checkpoint=True)
    assert plan.layers[1] == LayerStrategy(tp=2, dp_type="zero3", tp_consecutive=False)
    assert plan.layers[2] == LayerStrategy(sp=4, sp_kind="ulysses", dp_type="zero2")
    assert plan.layers[3] == LayerStrategy(dp_type="zero3", checkpoint=True)
    assert plan.embedding == LayerStrategy(tp=4, dp_type="zero3")
    assert [plan.dp_degree(s) for s in plan.layers] == [2, 2, 1, 4]


def test_export_then_import_is_lossless(tmp_path):
    layers = (
        LayerStrategy(tp=2, sp_kind="megatron", dp_type="ddp", checkpoint=True),
        LayerStrategy(sp=2, sp_kind="ulysses", dp_type="zero3", tp_consecutive=False),
        LayerStrategy(tp=4, sp_kind="megatron", dp_type="ddp"),
    )
    plan = Plan(world_size=8, layers=layers, pp=2, stage_layers=(2, 1), schedule="1f1b",
                num_microbatches=2, global_batch_size=8,
                embedding=LayerStrategy(sp=2, sp_kind="ulysses", dp_type="zero3"))
    path = tmp_path / "g2.json"
    d = write_galvatron2_plan(plan, path)
    assert d["pipeline_type"] == "pipedream_flush" and d["default_dp_type"] == "ddp"
    assert d["sequence_parallel"] == 1 and d["vsp"] == 1 and d["vtp"] == 2
    assert read_galvatron2_plan(path) == plan


def test_import_then_export_reproduces_the_file(tmp_path):
    plan = read_galvatron2_plan(write(tmp_path, G2_PLAN))
    out = write_galvatron2_plan(plan)
    assert {k: out[k] for k in G2_PLAN} == G2_PLAN
    assert out["world_size"] == 8 and out["sequence_parallel"] == 1 and out["vocab_sdp"] == 1


def test_world_size_argument_then_key_then_file_name(tmp_path):
    assert read_galvatron2_plan(write(tmp_path, G2_PLAN), world_size=16).world_size == 16
    keyed = write(tmp_path, {**G2_PLAN, "world_size": 8}, name="keyed_2nodes_8gpus_per_node.json")
    assert read_galvatron2_plan(keyed).world_size == 8
    anonymous = write(tmp_path, G2_PLAN, name="plan.json")
    with pytest.raises(ValueError, match="plan.json: the world size is unknown.*world_size=N"):
        read_galvatron2_plan(anonymous)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(pipeline_type="zb"), "pipeline_type: 'zb' is not accepted; accepted: 'gpipe', 'pipedream_flush'"),
        (dict(default_dp_type="zero1"), "default_dp_type: 'zero1' is not accepted"),
        (dict(checkpoint="1,0"), "checkpoint has 2 entries but tp_sizes_enc has 4"),
        (dict(dp_types_enc="0,2,0,1"), "dp_types_enc\\[1\\]: expected 0 or 1, got 2"),
        (dict(tp_sizes_enc="2,x,4,1"), "tp_sizes_enc: expected a comma-joined string of integers"),
        (dict(chunks="many"), "chunks: expected an integer"),
        (dict(pp_division="2,3"), "stage_layers sums to 5 but the plan has 4 layers"),
        (dict(tp_sizes_enc="2,2,8,1"), "layers\\[2\\]: tp\\*sp=8 does not divide the 4 devices"),
        (dict(sequence_parallel=2), "sequence_parallel: expected 0 or 1, got 2"),
        (dict(vocab_sdp=3), "vocab_sdp: expected 0 or 1, got 3"),
    ],
)
def test_bad_galvatron_files_give_clear_errors(tmp_path, changes, message):
    path = write(tmp_path, {**G2_PLAN, **changes})
    with pytest.raises(ValueError, match=message) as info:
        read_galvatron2_plan(path)
    assert str(path) in str(info.value)


def test_missing_keys_are_listed(tmp_path):
    d = dict(G2_PLAN)
    del d["chunks"], d["pp_deg"]
    with pytest.raises(ValueError, match="missing Galvatron-2 plan keys: pp_deg, chunks"):
        read_galvatron2_plan(write(tmp_path, d))


@pytest.mark.parametrize(
    "plan, message",
    [
        (Plan.uniform(8, 4, pp=2, schedule="interleaved_1f1b", virtual_stages=2, num_microbatches=2),
         "interleaved_1f1b' cannot be expressed"),
        (Plan.uniform(8, 4, dp_type="zero1"), "'zero1' cannot be expressed"),
        (Plan(world_size=4, layers=(LayerStrategy(), LayerStrategy(dp_type="zero2")), global_batch_size=4),
         "mixes ddp and zero2"),
        (Plan(world_size=4, layers=(LayerStrategy(tp=2, sp=2, sp_kind="ulysses"),), global_batch_size=4),
         "tp=2 with Ulysses sp=2 cannot be expressed"),
        (Plan(world_size=4, layers=(LayerStrategy(tp=2, sp_kind="megatron"), LayerStrategy(tp=2)),
              global_batch_size=4), "Megatron-SP switch"),
    ],
)
def test_export_refuses_what_the_format_cannot_express(plan, message):
    with pytest.raises(ValueError, match=message):
        write_galvatron2_plan(plan)


def test_megatron_sp_flag_applies_to_tp_layers_only(tmp_path):
    plan = read_galvatron2_plan(write(tmp_path, G2_PLAN), megatron_sp=True)
    assert [s.sp_kind for s in plan.layers] == [SpKind.MEGATRON, SpKind.MEGATRON, SpKind.ULYSSES, SpKind.NONE]
    assert plan.layers[3].dp_type is DpType.ZERO3


def test_selective_checkpointing_cannot_be_written_in_the_galvatron_format():
    plan = Plan.uniform(4, 2, checkpoint="selective")
    with pytest.raises(ValueError, match=r"layers\[0\].checkpoint: 'selective' cannot be expressed"):
        write_galvatron2_plan(plan)
    d = write_galvatron2_plan(Plan.uniform(4, 2, checkpoint="full"))
    assert d["checkpoint"] == "1,1"


def test_tp_layers_import_with_megatron_sp_by_default_as_its_runtime_runs_them(tmp_path):
    """Its files carry no sequence_parallel key and its runtime runs tp layers with Megatron-SP."""
    plan = read_galvatron2_plan(write(tmp_path, G2_PLAN))
    assert [s.sp_kind for s in plan.layers] == [SpKind.MEGATRON, SpKind.MEGATRON, SpKind.ULYSSES, SpKind.NONE]
    assert plan.embedding.sp_kind is SpKind.MEGATRON  # vtp=4
    off = read_galvatron2_plan(write(tmp_path, G2_PLAN), megatron_sp=False)
    assert {s.sp_kind for s in off.layers} == {SpKind.NONE, SpKind.ULYSSES}
    keyed = read_galvatron2_plan(write(tmp_path, {**G2_PLAN, "sequence_parallel": 0}))
    assert keyed == off
    assert load_plan(write(tmp_path, G2_PLAN)) == plan  # the format-detecting loader agrees


def test_export_writes_the_megatron_sp_switch_so_sp_off_survives_a_round_trip(tmp_path):
    plan = Plan(world_size=4, layers=(LayerStrategy(tp=2), LayerStrategy(tp=4)), global_batch_size=4)
    path = tmp_path / "g2.json"
    assert write_galvatron2_plan(plan, path)["sequence_parallel"] == 0
    assert read_galvatron2_plan(path) == plan


def test_export_writes_vocab_sdp_which_its_runtime_reads(tmp_path):
    plan = Plan(world_size=4, layers=(LayerStrategy(),), global_batch_size=4,
                embedding=LayerStrategy(dp_type="zero3"))
    d = write_galvatron2_plan(plan)
    assert d["vocab_sdp"] == 1 and d["embed_sdp"] == 1
    runtime_only = {k: v for k, v in d.items() if k != "embed_sdp"}  # a file its runtime wrote
    assert read_galvatron2_plan(write(tmp_path, runtime_only)).embedding.dp_type is DpType.ZERO3


def test_disagreeing_vocab_sdp_and_embed_sdp_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_sdp=0 and embed_sdp=1 disagree"):
        read_galvatron2_plan(write(tmp_path, {**G2_PLAN, "vocab_sdp": 0}))


def test_export_refuses_a_strided_embedding_that_the_format_would_lose():
    plan = Plan(world_size=4, layers=(LayerStrategy(tp=2),), global_batch_size=4,
                embedding=LayerStrategy(tp=2, tp_consecutive=False))
    with pytest.raises(ValueError, match="embedding.tp_consecutive: .*--galvatron2-compatible"):
        write_galvatron2_plan(plan)
    # with a single replica strided and adjacent ranks are the same group: nothing is lost
    whole = plan.replace(embedding=LayerStrategy(tp=4, tp_consecutive=False))
    assert write_galvatron2_plan(whole)["vtp"] == 4


def test_single_replica_layers_do_not_count_as_a_second_dp_type():
    """A layer with tp = the stage's devices has one replica: its dp type is irrelevant and
    must not make a zero2 plan 'mix ddp and zero2' (the search gives such layers ddp)."""
    plan = Plan(world_size=4, layers=(LayerStrategy(tp=4), LayerStrategy(dp_type="zero2")),
                global_batch_size=4, embedding=LayerStrategy(dp_type="zero2"))
    d = write_galvatron2_plan(plan)
    assert d["default_dp_type"] == "zero2" and d["tp_sizes_enc"] == "4,1"
