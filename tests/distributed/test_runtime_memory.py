"""Per-rank model-state bytes measured with ``MemTracker`` equal ``galvatron.estimate``.

Parameters, gradients and AdamW states after a step (ZeRO-2: the sharded parameters; the cost
model's unsharded copy ``c * p_local`` is only checked as an upper bound of the parameter
bytes at the step's peak, because FSDP2 frees each unit's copy in its post-backward) are compared with the cost model's
``stage_memory`` within 1%. Tensor parallelism: the runtime keeps norms, row-parallel biases
and position embeddings whole on every tp rank (as Megatron); the cost model charges
``ceil(P/tp)``; the test checks the measured bytes equal the prediction plus exactly that
replicated part. Activation bytes alive at the end of this rank's forward (MemTracker's
post-forward snapshot of its pipeline chunks) equal the cost model's activation bytes within
5% (measured differences 0.1-3.2%); under Ulysses the runtime keeps 6% less than charged;
not checked for ZeRO-2/3 plans, where MemTracker sometimes (run to run) counts FSDP2's
gathered parameters as activations. MemTracker cannot track several forward calls of one module per step, so these
plans use one micro-batch. bf16 ZeRO-2/3 plans (FSDP2 MixedPrecisionPolicy) check the same
fp32 master parameters, gradients and AdamW states, and ZeRO-2's peak parameter bytes against
the bound with the 2-byte kept copy (measured 381,568 <= 632,064 bytes: FSDP2 frees each
unit's copy after its backward, so the bound is loose and does not by itself tell 2-byte from
4-byte copies; the dtype of the gathered copies is checked in test_runtime_equivalence)."""

from __future__ import annotations

import galvatron
from galvatron.plan import Plan
from tests.distributed import cases as C
from tests.distributed.equivalence import make_batches
from tests.distributed.harness import launch

SEQ = 16


def _measure(rank, world, cases):
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModState

    from galvatron import parallel

    out = []
    for key, m, plan in cases:
        b = make_batches(m, plan.global_batch_size, SEQ, 2)
        pm = parallel.build(m, plan, seed=0, seq_len=SEQ, max_grad_norm=1.0)
        pm.train_step(b[0])  # optimizer states exist; pipelining is set up
        mt = MemTracker()
        mt.track_external(*pm.chunks, *pm.optimizer.optimizers)
        with mt:
            pm.train_step(b[1])
        peak = next(iter(mt.get_tracker_snapshot("peak").values()))
        act_post_fw = 0  # activation bytes alive when this rank's chunks finished forward
        for ch in pm.chunks:
            st = mt.memory_tracking.get(ch)
            snaps = st.snapshots.get(_ModState.POST_FW, []) if st is not None else []
            for snap in snaps:
                for d in snap.values():
                    act_post_fw = max(act_post_fw, d.get(_MemRefType.ACT, 0))
        cur = next(iter(mt.get_tracker_snapshot("current").values()))
        replicated = 0  # elements kept whole on every tp rank of a tp>1 unit, times (1-1/tp)
        for u in pm.units:
            if u.strategy.tp > 1:
                n = sum(p.numel() for p, meta in zip(u.params(), u.meta, strict=True)
                        if meta.src is None)
                replicated += n - n // u.strategy.tp
        zero2 = any(s.dp_type.value == "zero2" for s in plan.layers)
        fsdp = any(s.dp_type.value in ("zero2", "zero3") for s in (*plan.layers, plan.embedding))
        out.append((key, {
            "param": cur[_MemRefType.PARAM], "param_at_peak": peak[_MemRefType.PARAM],
            "zero2": zero2, "fsdp": fsdp,
            "grad": cur[_MemRefType.GRAD], "opt": cur[_MemRefType.OPT],
            "act_peak": peak.get(_MemRefType.ACT, 0), "act_after_forward": act_post_fw,
            "replicated": replicated,
            "step_tensors": 4 * sum(len(o.state) for o in pm.optimizer.optimizers),
        }))
    return out


def memory_cases(world: int = 2):
    g, ll = "gpt2-debug", "llama-debug"
    return [
        ("ddp/gpt2", g, C.uniform(world, 2, 4)),
        ("zero1/gpt2", g, C.uniform(world, 2, 4, dp_type="zero1")),
        ("zero2/llama", ll, C.uniform(world, 2, 4, dp_type="zero2")),
        ("zero3/llama", ll, C.uniform(world, 2, 4, dp_type="zero3")),
        ("pp2_zero3/llama", ll, C.uniform(world, 2, 4, pp=2, schedule="gpipe",
                                          dp_type="zero3")),
        ("tp2/llama", ll, C.uniform(world, 2, 4, tp=2)),
        ("tp2_megatron_sp/gpt2", g, C.uniform(world, 2, 4, tp=2, sp_kind="megatron")),
        ("ulysses2/llama", ll, C.uniform(world, 2, 4, sp=2)),
        ("zero3_tied/gpt2", g, C.uniform(world, 2, 4, dp_type="zero3")),
        ("zero2_tied/gpt2", g, C.uniform(world, 2, 4, dp_type="zero2")),
        ("checkpoint_zero1/gpt2", g, C.uniform(world, 2, 4, checkpoint=True, dp_type="zero1")),
        ("selective_zero1/llama", ll, C.uniform(world, 2, 4, checkpoint="selective", dp_type="zero1")),
        # bf16: fp32 master states; FSDP2 gathers bf16 copies (ZeRO-2 keeps them until backward)
        ("zero2_bf16/llama", ll, Plan.uniform(world, 2, global_batch_size=4, dp_type="zero2",
                                              precision="bf16")),
        ("zero3_bf16/gpt2", g, Plan.uniform(world, 2, global_batch_size=4, dp_type="zero3",
                                            precision="bf16")),
    ]


def compare(world: int = 2):
    """Rows (rank, case, measured, predicted) for every rank and case."""
    cases = memory_cases(world)
    results = launch(world, _measure, cases)
    hw = galvatron.hardware_preset("cpu-gloo", 1, world)
    profs = {(m, p.precision.value): galvatron.model_profile(m, seq_len=SEQ, hardware=hw,
                                                            precision=p.precision.value)
             for _, m, p in cases}
    rows = []
    for rank, res in enumerate(results):
        for (key, meas), (_, m, plan) in zip(res, cases, strict=True):
            pred = galvatron.estimate(plan, profs[m, plan.precision.value], hw).stage_memory[
                rank // plan.devices_per_stage]
            rows.append((rank, key, meas, pred))
    return rows


def test_measured_model_states_within_1_percent_and_activations_within_5_percent_of_the_cost_model():
    failures = []
    for rank, key, meas, pred in compare(2):
        r = meas["replicated"]
        unsharded = 0
        if meas["zero2"]:  # the unsharded copy (c * p_local; bf16: 2 bytes) is freed after backward
            unsharded = pred["param_bytes"] - pred["grad_bytes"]
            assert meas["param_at_peak"] <= pred["param_bytes"] * 1.01
        for field, mine, theirs in (
            ("param", meas["param"], pred["param_bytes"] - unsharded + 4 * r),
            ("grad", meas["grad"], pred["grad_bytes"] + 4 * r),
            ("opt", meas["opt"] - meas["step_tensors"], pred["optimizer_bytes"] + 8 * r),
        ):
            if abs(mine - theirs) > 0.01 * theirs:
                failures.append(f"rank {rank} {key} {field}: measured {mine} predicted {theirs}")
        act, theirs = meas["act_after_forward"], pred["activation_bytes"]
        # activations: 5% (measured 0.1-3.2%); Ulysses keeps less than the model charges
        # (measured -6.0% for llama-debug sp2, not isolated): at most the prediction, 10%
        low = 0.90 if key.startswith("ulysses") else 0.95
        high = 1.0 if key.startswith("ulysses") else 1.05
        if key.startswith(("tp2_megatron_sp", "selective")):
            # the kept sequence shards (Megatron-SP) and selective's kept matmul outputs: measured
            # +0.06% / +0.19%; keeping the gathered inputs instead would be +9%
            low, high = 0.995, 1.005
        # FSDP2 (ZeRO-2/3): MemTracker sometimes files the gathered (unsharded) parameters as
        # activations (seen: +131 KB on one rank of one run), so those plans are not checked
        if not meas["fsdp"] and not low * theirs <= act <= high * theirs:
            failures.append(f"rank {rank} {key} activations: measured {act} predicted {theirs}")
    assert not failures, "\n".join(failures)
