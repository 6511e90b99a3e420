"""``galvatron check``'s measurements.

- Recording (the instrumentation hooks) leaves training unchanged: identical losses and
  parameters with and without it; the recorded categories cover the step.
- ``--fake`` runs the real runtime: the peak live tensor bytes a fake-tensor rank measures
  equal what the same rank measures in a real training step, per plan (pp=1: within 1%;
  pp>1: within 5%, torch's pipeline stage also holds receive buffers the emulated schedule
  does not allocate).
"""

from __future__ import annotations

import galvatron.models as M
from galvatron.plan import LayerStrategy as S
from galvatron.plan import Plan
from tests.distributed.harness import launch

SEQ = 32
OVR = {"num_layers": 4}


def _plans(world):
    return [
        ("ddp_ckpt", Plan.uniform(world, 4, global_batch_size=8, num_microbatches=2, checkpoint=True,
                                  precision="fp32")),
        ("mixed", Plan(world_size=world, layers=(S(tp=2, dp_type="zero3"), S(tp=2, sp_kind="megatron"),
                                                  S(sp=2, sp_kind="ulysses", dp_type="zero1"),
                                                  S(dp_type="zero2", checkpoint=True)),
                       embedding=S(tp=2), global_batch_size=8, num_microbatches=2,
                       precision="fp32").validate()),
        ("pp2_1f1b", Plan.uniform(world, 4, pp=2, schedule="1f1b", num_microbatches=4, global_batch_size=8,
                                  dp_type="zero1" if world > 2 else "ddp", precision="fp32")),
    ]


def _real(rank, world, cases):
    import torch

    from galvatron import parallel
    from galvatron.check.measure import measure_peak_memory, synthetic_batch
    from galvatron.parallel import instrument as I

    out = {}
    for key, plan in cases:
        res = {}
        for recorded in (False, True):
            model = M.build("llama-debug", seed=0, **OVR)
            pm = parallel.build(model, plan, seed=0, seq_len=SEQ)
            losses, cats = [], []
            for i in range(2):
                b = synthetic_batch("llama-debug", OVR, plan.global_batch_size, SEQ, i)
                if recorded:
                    rec = I.Recorder()
                    with I.recording(rec):
                        losses.append(pm.train_step(b))
                    cats.append(rec.totals())
                else:
                    losses.append(pm.train_step(b))
            params = [t.detach().clone() for _, t, _ in pm.local_parameters()]
            res[recorded] = (losses, params, cats)
        b = synthetic_batch("llama-debug", OVR, plan.global_batch_size, SEQ, 5)
        peak = measure_peak_memory(pm, lambda b=b: b)
        same = (res[False][0] == res[True][0]
                and all(torch.equal(a, c) for a, c in zip(res[False][1], res[True][1], strict=True)))
        out[key] = {"same": same, "cats": res[True][2], "peak": peak, "stage": pm.ctx.stage}
    return out


def test_recording_leaves_training_unchanged_and_fake_ranks_measure_what_real_ranks_measure():
    from galvatron.check.fake import measure_fake

    world = 2
    cases = _plans(world)
    real = launch(world, _real, cases, timeout_s=400)
    failures = []
    for key, plan in cases:
        fake = measure_fake(plan, "llama-debug", SEQ, OVR, ranks=list(range(world)))
        for rank in range(world):
            r = real[rank][key]
            if not r["same"]:
                failures.append(f"{key} rank {rank}: recording changed the losses or parameters")
            for cats in r["cats"]:
                if cats["forward"] <= 0 or cats["backward"] <= 0:
                    failures.append(f"{key} rank {rank}: no forward/backward time recorded: {cats}")
            if plan.pp > 1 and not any(c["pipeline"] > 0 for c in r["cats"]):
                failures.append(f"{key} rank {rank}: no pipeline time recorded")
            got, want = fake[rank]["memory_bytes"]["total"], r["peak"]["total"]
            # pp=1: the same step code on real and fake tensors but for the loss scalars and
            # shifted labels; pp>1: torch's pipeline stage also holds receive buffers the
            # emulated schedule does not allocate
            tol = 0.01 if plan.pp == 1 else 0.05
            if abs(got - want) > tol * want:
                failures.append(f"{key} rank {rank}: fake {got} real {want} bytes")
    assert not failures, "\n".join(failures)
