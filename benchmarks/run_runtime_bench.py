"""Runtime overhead: our DDP / ZeRO-3 plans vs the same training written directly with torch
DDP / FSDP2 (2 gloo processes on CPU, fp32). Prints one JSON line per pair.

Usage: ``python benchmarks/run_runtime_bench.py [--steps 20] [--repeats 3] [--hidden 256]
[--layers 4]``. Model: gpt2 with the given size, sequence 128, global batch 8. Both trainings
run in the same two processes, one step of each in turn, after 2 warm-up steps; a step's time
is its slowest rank's. Reported: the median step times and the overhead, both as the ratio of
the medians and as the median of the per-step paired ratios (robust to load drift).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from tests.distributed.harness import launch  # noqa: E402


def _data(cfg, gbs, seq, n):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, cfg.vocab_size, (gbs, seq), generator=g) for _ in range(n)]


def _build_ours(world, cfg, dp_type, gbs, seq):
    import dataclasses

    import galvatron.models as M
    from galvatron import parallel
    from galvatron.plan import DpType, Plan

    if dp_type == "zero3_root_zero2":  # layers ZeRO-3, embedding/head ZeRO-2 (see main)
        plan = Plan.uniform(world, cfg.num_layers, dp_type="zero3", precision="fp32",
                            global_batch_size=gbs)
        plan = plan.replace(embedding=dataclasses.replace(plan.embedding, dp_type=DpType.ZERO2))
    else:
        plan = Plan.uniform(world, cfg.num_layers, dp_type=dp_type, precision="fp32",
                            global_batch_size=gbs)
    pm = parallel.build(M.build(cfg, seed=0), plan, seed=0, seq_len=seq)
    return lambda b: pm.train_step({"input_ids": b})


def _build_torch(rank, world, cfg, kind, gbs):
    import galvatron.models as M

    model = M.build(cfg, seed=0)
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import fully_shard

        for layer in model.layers:
            fully_shard(layer)
        wrapped = fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    per = gbs // world

    def step(b):
        ids = b[rank * per:(rank + 1) * per]
        opt.zero_grad()
        loss = model.loss(wrapped(input_ids=ids), {"labels": ids})
        loss.backward()
        opt.step()
        return float(loss.detach())  # a training loop reads its loss (local mean here)

    return step


def _paired(rank, world, ov, kind, ours_kind, gbs, seq, steps):
    """Both trainings in the same processes, one step of each in turn (which one goes first
    alternates), so load changes on the machine hit both alike. Returns per-step times."""
    import galvatron.models as M

    cfg = M.get_config("gpt2-debug", **ov)
    ours = _build_ours(world, cfg, ours_kind, gbs, seq)
    ref = _build_torch(rank, world, cfg, kind, gbs)
    data = _data(cfg, gbs, seq, steps + 2)
    t_ours, t_ref = [], []
    for i, b in enumerate(data):
        order = [(ours, t_ours), (ref, t_ref)]
        for fn, out in order if i % 2 else order[::-1]:
            t = time.perf_counter()
            fn(b)
            if i >= 2:  # warm-up
                out.append(time.perf_counter() - t)
    return t_ours, t_ref


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ov = dict(hidden_size=args.hidden, num_layers=args.layers, ffn_hidden=4 * args.hidden)
    gbs, seq = 8, 128
    # torch's FSDP2 root (the whole model: embedding, head) keeps its parameters gathered from
    # forward to backward, i.e. ZeRO-2 on the embedding/head and ZeRO-3 on the layers: the third
    # pair is that plan; the second (ZeRO-3 everywhere) frees the tied table between the
    # embedding and the head, two more all-gathers per step.
    pairs = (("ddp", "ddp", "galvatron_ddp"), ("fsdp2", "zero3", "galvatron_zero3"),
             ("fsdp2", "zero3_root_zero2", "galvatron_zero3_layers_zero2_embedding"))
    for kind, ours_kind, ours_name in pairs:
        ours, ref = [], []
        for _ in range(args.repeats):
            res = launch(2, _paired, ov, kind, ours_kind, gbs, seq, args.steps, timeout_s=600)
            # a step lasts as long as its slowest rank
            ours += [max(ts) for ts in zip(*(r[0] for r in res), strict=True)]
            ref += [max(ts) for ts in zip(*(r[1] for r in res), strict=True)]
        ratios = [a / b for a, b in zip(ours, ref, strict=True)]
        print(json.dumps({
            "pair": f"{ours_name}_vs_torch_{kind}", "world": 2, "model": "gpt2", **ov, "seq": seq,
            "global_batch": gbs, "steps": len(ours), "torch_median_step_s": round(statistics.median(ref), 4),
            "ours_median_step_s": round(statistics.median(ours), 4),
            "overhead_of_medians": round(statistics.median(ours) / statistics.median(ref) - 1, 4),
            "overhead_median_of_paired_ratios": round(statistics.median(ratios) - 1, 4)}), flush=True)


if __name__ == "__main__":
    main()
