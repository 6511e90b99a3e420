"""Any device count: presets, measured profiles, model tables and the search work for group
sizes that are not powers of two (issue 15, item 2)."""

import math

import pytest

import galvatron
from galvatron import _C
from galvatron.plan import LayerStrategy, Plan
from galvatron.profiles import Collective, HardwareProfile, Op, Placement
from galvatron.profiles.collectives import (
    Topology,
    algorithm_gbps,
    bus_factor,
    group_sizes,
    latency_ms,
    topology_collectives,
)


def test_group_sizes_are_the_divisors_of_the_world_and_two():
    assert group_sizes(24, 8) == [2, 3, 4, 6, 8, 12, 24]
    assert group_sizes(9, 3) == [2, 3, 9]


def test_preset_has_every_group_size_of_a_three_node_cluster():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=3, gpus_per_node=8)
    for n in (3, 6, 12, 24):
        assert hw.collective("all_reduce", n, "inter_node") is not None
    for n in (3, 6):
        assert hw.collective("all_gather", n, "consecutive") is not None
    assert hw.derived_sizes == {}  # a preset is complete by construction


def test_preset_collectives_follow_the_ring_and_tree_formulas():
    topo = Topology(intra_bus_gbps=230.0, nic_bus_gbps=24.0, nics_per_node=8)
    colls = {(c.op, c.group_size, c.placement): c for c in topology_collectives(topo, 3, 8)}
    ar6 = colls[(Op.ALL_REDUCE, 6, Placement.CONSECUTIVE)]
    assert ar6.bandwidth_gbps == pytest.approx(230.0 * 6 / (2 * 5))
    # ring latency inside a node: 10 us + 2*(n-1) NVLink hops of 1.9 us; the tree is slower here
    assert ar6.alpha_ms == pytest.approx(min(10.0 + 10 * 1.9, 4.4 + 2 * 5 * 1.2) / 1e3)
    ag24 = colls[(Op.ALL_GATHER, 24, Placement.INTER_NODE)]
    assert ag24.bandwidth_gbps == pytest.approx(24.0 * 24 / 23)
    # one rank per node: 24 nodes, every ring step crosses the network
    assert ag24.alpha_ms == pytest.approx((10.0 + 23 * 4.0) / 1e3)
    assert latency_ms(Op.ALL_REDUCE, 1536, 192) < latency_ms(Op.ALL_GATHER, 1536, 192)  # tree wins at scale
    assert bus_factor(Op.P2P, 2) == 1.0 and algorithm_gbps(Op.REDUCE_SCATTER, 4, 30.0) == pytest.approx(40.0)
    assert topo.inter_node_rings(8) == 8


def measured(sizes, bus=(10.0, 20.0), alpha=(0.1, 0.3)):
    """A 'measured' single-node profile: all-reduce at `sizes`, bus bandwidth and latency
    growing linearly in log2(n) from the first to the last size."""
    lo, hi = math.log2(sizes[0]), math.log2(sizes[-1])
    colls = []
    for n in sizes:
        w = (math.log2(n) - lo) / (hi - lo)
        b = bus[0] + w * (bus[1] - bus[0])
        colls.append(Collective(Op.ALL_REDUCE, n, Placement.CONSECUTIVE, alpha[0] + w * (alpha[1] - alpha[0]),
                                algorithm_gbps(Op.ALL_REDUCE, n, b)))
    return HardwareProfile(num_nodes=1, gpus_per_node=12, device_memory_bytes=2**34, collectives=tuple(colls),
                           source="measured")


def test_measured_profile_interpolates_bus_bandwidth_in_log_size_and_says_so():
    hw = measured([2, 4, 8])
    assert hw.derived_sizes == {"all_reduce": [3, 6, 12]}
    full = {c.group_size: c for c in hw.complete().collectives}
    for n in (3, 6):  # between measured sizes: on the line through them
        w = (math.log2(n) - 1) / 2
        assert full[n].derived
        assert full[n].bandwidth_gbps == pytest.approx(algorithm_gbps(Op.ALL_REDUCE, n, 10.0 + w * 10.0))
        assert full[n].alpha_ms == pytest.approx(0.1 + w * 0.2)
    # beyond the largest measured size: held at its bus bandwidth and latency
    assert full[12].bandwidth_gbps == pytest.approx(algorithm_gbps(Op.ALL_REDUCE, 12, 20.0))
    assert full[12].alpha_ms == pytest.approx(0.3)
    assert not full[4].derived
    # derived entries round-trip through JSON with their mark
    again = HardwareProfile.from_dict(hw.complete().to_dict())
    assert again.derived_sizes == {"all_reduce": [3, 6, 12]}
    assert "(derived)" in hw.complete().summary()


def test_inter_node_groups_run_one_ring_per_rank_on_each_node():
    hw = galvatron.hardware_preset("h100-sxm", num_nodes=4, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2-small", seq_len=256, hardware=hw, max_degree=8)
    ht, mt = hw.to_tables(), mp.to_tables()
    assert ht.inter_node_rings == 7  # 360 GB/s NVLink / 48 GB/s NIC, below 8 NICs
    one = _C.Strategy()  # dp=32 over 4 nodes: 8 ranks of the weight group on each node
    tp8 = _C.Strategy()
    tp8.tp = 8  # dp=4 over 4 nodes: one rank per node
    c32 = _C.layer_cost(mt, ht, 0, one, 0, 32, 32)
    c4 = _C.layer_cost(mt, ht, 0, tp8, 0, 32, 4)
    ar = hw.collective("all_reduce", 32, "inter_node")
    p = mp.layer_types[0].param_count
    bwd = c32.bwd_ms
    comm = ar.alpha_ms + 4.0 * p / (ar.bandwidth_gbps * 7 * 1e6)
    s = hw.overlap_slowdown
    assert c32.grad_sync_ms == pytest.approx(max(bwd, comm) + (s - 1) * min(bwd, comm) - bwd)
    assert c4.grad_sync_ms >= 0


@pytest.mark.parametrize("nodes,gpn", [(3, 8), (1, 6), (1, 12)])
def test_search_on_non_power_of_two_clusters(nodes, gpn):
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=nodes, gpus_per_node=gpn)
    mp = galvatron.model_profile("gpt2-small", seq_len=1024, hardware=hw)
    assert 3 in mp.layer_types[0].fwd_ms_per_sample  # tables for every divisor of the world
    res = galvatron.search(mp, hw, global_batch_size=nodes * gpn * 2, num_threads=1, uniform_baseline=False)
    plan = res.plan
    assert plan.world_size == nodes * gpn
    pred = galvatron.estimate(plan, mp, hw)
    assert pred.step_time_s == pytest.approx(res.predicted.step_time_s, rel=1e-9)


def test_search_enumerates_degree_three():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=6)
    opts = _C.SearchOptions()
    opts.world_size, opts.max_tp, opts.max_sp = 6, 6, 6
    tps = {s.tp for s in _C.enumerate_strategies(opts, 6, False)}
    sps = {s.sp for s in _C.enumerate_strategies(opts, 6, False)}
    assert tps == {1, 2, 3, 6} and sps == {1, 2, 3, 6}
    del hw


def test_megatron_gpt3_zero3_on_384_gpus_estimates():
    """The 175B GPT-3 configuration on 384 A100s with ZeRO-3 data parallelism (dp=24)."""
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=48, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2", seq_len=2048, hardware=hw, max_degree=8, hidden_size=12288,
                                 num_layers=96, num_heads=96, ffn_hidden=4 * 12288, vocab_size=51200,
                                 max_seq_len=2048)
    plan = Plan.uniform(384, 96, pp=2, tp=8, dp_type="zero3", checkpoint=True, num_microbatches=16,
                        global_batch_size=384)
    pred = galvatron.estimate(plan, mp, hw)
    assert 0 < pred.step_time_s < 1e3 and pred.max_peak_memory_bytes > 0
    assert pred.breakdown_ms["dp_comm_ms"] > 0


def test_model_profile_tables_take_any_degrees_and_name_missing_ones():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=6)
    mp = galvatron.model_profile("gpt2-small", seq_len=128, hardware=hw)
    t = mp.to_tables()
    assert list(t.layer_types[0].degrees) == [1, 2, 3, 6]
    lt = mp.layer_types[0]
    del lt.bwd_ms_per_sample[3]
    with pytest.raises(ValueError, match="no entries for degrees \\[3\\]"):
        mp.to_tables()


def test_plan_with_degree_missing_from_the_profile_is_rejected():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=6)
    mp = galvatron.model_profile("gpt2-small", seq_len=128, hardware=hw, max_degree=2)
    plan = Plan.uniform(6, mp.num_layers, tp=3, global_batch_size=2)
    with pytest.raises(ValueError, match="shard degree 3"):
        galvatron.estimate(plan, mp, hw)


def test_breakdown_keeps_gradient_sync_out_of_the_optimizer_and_sums_to_the_step():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=4, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2-xl", seq_len=1024, hardware=hw, max_degree=8)
    plan = Plan.uniform(32, mp.num_layers, global_batch_size=32)
    pred = galvatron.estimate(plan, mp, hw)
    b = pred.breakdown_ms
    params = sum(lt.param_count for lt in mp.layer_types for _ in range(1))  # one layer type
    assert b["grad_sync_ms"] > 0
    # the optimizer step alone: AdamW's bytes over every local parameter
    local = params * mp.num_layers + mp.embedding.embed_param_count + mp.embedding.head_param_count \
        + mp.embedding.tied_param_count
    assert b["optimizer_ms"] == pytest.approx(hw.optimizer_ms_per_param * local, rel=1e-6)
    assert sum(b.values()) == pytest.approx(pred.step_time_s * 1e3, rel=1e-9)
    strategy = LayerStrategy()
    assert strategy.tp == 1


def test_cli_search_on_three_nodes_of_eight(capsys):
    """`galvatron search --nodes 3 --gpus-per-node 8` with a shipped preset (it failed with "no
    collectives entry for op=all_reduce group_size=24" before)."""
    from galvatron.cli import main

    assert main(["search", "--nodes", "3", "--gpus-per-node", "8", "--model", "gpt2-small", "--seq-len", "512",
                 "--global-batch-size", "48", "--hardware-preset", "a100-80g-sxm", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "world_size=24" in out and "note:" not in out  # presets derive nothing


def test_cli_search_says_which_collectives_a_measured_profile_lacks(tmp_path, capsys):
    from galvatron.cli import main

    colls = tuple(Collective(op, n, pl, 0.01, 100.0) for op in Op for n in (2, 4) for pl in Placement
                  if op is not Op.P2P or n == 2)
    hw = HardwareProfile(num_nodes=1, gpus_per_node=6, device_memory_bytes=2**36, collectives=colls,
                         source="measured")
    path = tmp_path / "hw.json"
    hw.save(path)
    assert main(["search", "--hardware", str(path), "--model", "gpt2-small", "--seq-len", "512",
                 "--global-batch-size", "12", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "note: the hardware profile was not measured at these group sizes" in out
    assert "'all_reduce': [3, 6]" in out
