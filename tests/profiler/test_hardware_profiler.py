"""Hardware profiler: a real 2-process gloo run (one launch through the CLI), the fits, the
group layouts, and bad input (no hang, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import galvatron
from galvatron.cli import main
from galvatron.profiler import launch
from galvatron.profiler.fit import fit_alpha_beta, fit_fixed_per_sample, robust_line
from galvatron.profiler.hardware import HardwareOptions, group_kinds, p2p_kinds
from galvatron.profiler.launch import profile_hardware
from galvatron.profiles import HardwareProfile, Op, Placement, model_profile


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GALVATRON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path / "cache"


def test_two_gloo_ranks_measure_every_collective_and_the_profile_feeds_the_search(tmp_path, cache, capfd,
                                                                                 monkeypatch):
    out = tmp_path / "hw.json"
    assert main(["profile", "hardware", "--nproc", "2", "--quick", "--out", str(out), "--timeout", "60"]) == 0
    log = capfd.readouterr().out
    progress = [line for line in log.splitlines() if line.startswith("[galvatron profile hardware")]
    assert any("all_to_all" in line and "GB/s" in line for line in progress)  # printed by rank 0 as it went
    assert any("overlap_slowdown" in line for line in progress) and f"wrote {out}" in log
    hw = HardwareProfile.load(out)
    assert (hw.num_nodes, hw.gpus_per_node, hw.backend, hw.source) == (1, 2, "gloo", "measured")
    for op in Op:
        for placement in (Placement.CONSECUTIVE, Placement.STRIDED):
            c = hw.collective(op, 2, placement)
            assert c is not None, (op, placement)
            assert c.bandwidth_gbps > 0 and c.alpha_ms >= 0
            sizes = [b for b, _ in c.points]
            assert sizes == sorted(sizes) and len(sizes) >= 3
            assert c.points[-1][1] > c.points[0][1], f"{op}: 16 MiB not slower than 4 KiB: {c.points}"
    assert hw.overlap_slowdown >= 1.0 and hw.optimizer_ms_per_param > 0
    assert hw.peak_tflops["fp32"] > 0 and hw.device_memory_bytes > 2**28
    assert hw.framework_overhead_bytes > 0  # the resident size of a rank on CPU
    res = galvatron.search(model_profile("gpt2-debug", hardware=hw), hw, global_batch_size=4)
    assert res.plan.world_size == 2 and res.predicted.step_time_s > 0
    # the same request again is served from the cache, without starting processes
    monkeypatch.setattr(launch, "_spawn", lambda *a: pytest.fail("the cached profile was measured again"))
    assert main(["profile", "hardware", "--nproc", "2", "--quick", "--out", str(tmp_path / "again.json")]) == 0
    assert "cached result" in capfd.readouterr().out
    assert HardwareProfile.load(tmp_path / "again.json") == hw


def test_four_ranks_as_two_nodes_measure_inter_node_groups(cache):
    """The inter-node code path (groups spread over nodes, p2p one node apart) on 4 local
    processes treated as 2 nodes x 2."""
    hw = profile_hardware(4, HardwareOptions(quick=True, sizes=(4096, 262144), repeats=2, simulate_nodes=2,
                                             timeout_s=60, verbose=False), use_cache=False)
    assert (hw.num_nodes, hw.gpus_per_node) == (2, 2)
    for op in Op:
        sizes = [2] if op is Op.P2P else [2, 4]
        for n in sizes:
            c = hw.collective(op, n, Placement.INTER_NODE)
            assert c is not None and c.bandwidth_gbps > 0 and len(c.points) == 2, (op, n)
    assert hw.collective(Op.ALL_REDUCE, 2, Placement.CONSECUTIVE) is not None
    res = galvatron.search(model_profile("gpt2-debug", hardware=hw), hw, global_batch_size=8)
    assert res.plan.world_size == 4


def test_under_torchrun_every_rank_runs_the_command_and_rank_0_writes(tmp_path, cache):
    out = tmp_path / "hw.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "galvatron", "profile", "hardware", "--quick", "--sizes", "4096,65536", "--repeats", "2",
           "--timeout", "60", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    hw = HardwareProfile.load(out)
    assert hw.world_size == 2 and hw.collective("all_to_all", 2, "consecutive").bandwidth_gbps > 0
    assert run.stdout.count("wrote") == 1  # only rank 0 writes


def test_a_rank_that_raises_is_named_and_nothing_is_returned(cache):
    with pytest.raises(ValueError, match=r"rank 1 failed .*fault injected on rank 1"):
        profile_hardware(2, HardwareOptions(quick=True, fail_rank=1, timeout_s=30, verbose=False), use_cache=False)
    assert not cache.exists()


def test_a_killed_rank_is_named(cache):
    with pytest.raises(ValueError, match=r"rank 1 failed \(exit code -9\): the process died without a Python error"):
        profile_hardware(2, HardwareOptions(quick=True, kill_rank=1, timeout_s=30, verbose=False), use_cache=False)


def test_a_hung_rank_times_out_instead_of_hanging(cache):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"timed out after 4 s; ranks \[.*1.*\] still running"):
        profile_hardware(2, HardwareOptions(quick=True, hang_rank=1, timeout_s=4, verbose=False), use_cache=False)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("argv, message", [
    (["--nproc", "1"], "at least 2 processes"),
    (["--nproc", "2", "--nodes", "3"], "must be an integer >= 1 dividing nproc=2"),
    (["--nproc", "2", "--backend", "nccl"], "'nccl' needs CUDA devices"),
    (["--nproc", "2", "--sizes", "4096,x"], "comma list of integers"),
])
def test_bad_hardware_requests_fail_fast_with_a_clear_message(tmp_path, cache, capsys, argv, message):
    if "nccl" in argv and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "hw.json"
    assert main(["profile", "hardware", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("galvatron: error:") and message in err and "Traceback" not in err
    assert not out.exists()


def test_alpha_beta_fit_is_exact_on_clean_data_ignores_an_outlier_and_keeps_large_messages():
    alpha, bw = 0.05, 20.0  # ms, GB/s
    pts = [(float(b), alpha + b / (bw * 1e6)) for b in (2**k for k in range(10, 28, 2))]
    a, g = fit_alpha_beta(pts)
    assert a == pytest.approx(alpha, rel=1e-6) and g == pytest.approx(bw, rel=1e-6)
    noisy = list(pts)
    noisy[3] = (noisy[3][0], noisy[3][1] * 8)  # one sample hit by a context switch
    a, g = fit_alpha_beta(noisy)
    assert a == pytest.approx(alpha, rel=0.02) and g == pytest.approx(bw, rel=0.02)
    # a curve that bends (bandwidth halves past a cache size): the largest message is kept and fitted
    bent = [(b, t if b < 2**22 else 2 * t) for b, t in pts]
    a, g = fit_alpha_beta(bent)
    assert a + bent[-1][0] / (g * 1e6) == pytest.approx(bent[-1][1], rel=0.05)
    assert a == pytest.approx(alpha, rel=0.05)
    a, b, kept = robust_line([1, 2, 3], [5, 5, 5])  # flat: bandwidth stays positive
    assert b > 0 and a >= 0


def test_fixed_plus_per_sample_fit_shares_one_intercept():
    fixed, per = fit_fixed_per_sample({1: [(1, 1.5), (2, 2.5), (4, 4.5)], 2: [(1, 1.0), (2, 1.5), (4, 2.5)]})
    assert fixed == pytest.approx(0.5) and per[1] == pytest.approx(1.0) and per[2] == pytest.approx(0.5)


def test_group_layouts_cover_every_size_and_placement_of_two_nodes():
    kinds = {(p, n): groups for p, n, groups in group_kinds(16, 8, 2)}
    assert kinds[(Placement.CONSECUTIVE, 8)] == [list(range(8)), list(range(8, 16))]
    assert kinds[(Placement.STRIDED, 2)][0] == [0, 4] and len(kinds[(Placement.STRIDED, 2)]) == 8
    assert kinds[(Placement.INTER_NODE, 2)][0] == [0, 8] and kinds[(Placement.INTER_NODE, 16)] == [list(range(16))]
    assert {n for p, n in kinds if p is Placement.INTER_NODE} == {2, 4, 8, 16}
    for (_, _), groups in kinds.items():  # each kind partitions the world
        flat = sorted(r for g in groups for r in g)
        assert flat == sorted(set(flat)) and len(flat) == 16
    p2p = dict(p2p_kinds(16, 8, 2))
    assert p2p[Placement.CONSECUTIVE][0] == [0, 1] and p2p[Placement.INTER_NODE][0] == [0, 8]
    assert p2p[Placement.STRIDED][0] == [0, 4]
    assert os.cpu_count() >= 1


@pytest.mark.parametrize("num_nodes, gpus_per_node", [(1, 8), (2, 4), (4, 2)])
def test_the_measured_group_kinds_cover_every_lookup_of_the_search(num_nodes, gpus_per_node):
    """A profile with exactly the (op, size, placement) entries the profiler measures (fake
    timings) is complete: the search never asks for a missing entry on this cluster."""
    from galvatron.profiler.hardware import _with_strided_fallbacks

    world = num_nodes * gpus_per_node
    colls = []
    for placement, n, _ in group_kinds(world, gpus_per_node, num_nodes):
        colls += [{"op": op.value, "group_size": n, "placement": placement.value} for op in Op if op is not Op.P2P]
    colls += [{"op": "p2p", "group_size": 2, "placement": p.value} for p, _ in p2p_kinds(world, gpus_per_node, num_nodes)]
    colls = [{**c, "alpha_ms": 0.01, "bandwidth_gbps": 10.0} for c in _with_strided_fallbacks(colls, gpus_per_node)]
    hw = HardwareProfile.from_dict({"version": 1, "kind": "hardware", "num_nodes": num_nodes,
                                    "gpus_per_node": gpus_per_node, "device_memory_bytes": 2**34,
                                    "collectives": colls, "peak_tflops": {"bf16": 100.0}})
    mp = model_profile("gpt2-debug", hardware=hw, max_degree=world)
    res = galvatron.search(mp, hw, global_batch_size=[8, 16], max_tp=world, max_sp=world,
                           pp_degrees=[1, 2], schedules=("gpipe", "1f1b"))
    assert res.plan.world_size == world
