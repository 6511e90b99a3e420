"""Runtime overhead: our DDP / ZeRO-3 plans vs the same training written directly with torch
DDP / FSDP2 (2 gloo processes on CPU, fp32). Prints one JSON line per configuration.

Usage: ``python benchmarks/run_runtime_bench.py [--steps 10] [--hidden 256] [--layers 4]``.
Median step time over ``--steps`` steps after 2 warm-up steps; model: gpt2 with the given
size, sequence 128, global batch 8.
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


def _timed(step, batches):
    times = []
    for i, b in enumerate(batches):
        t = time.perf_counter()
        step(b)
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ours(rank, world, ov, dp_type, gbs, seq, steps):
    import galvatron.models as M
    from galvatron import parallel
    from galvatron.plan import Plan

    cfg = M.get_config("gpt2-debug", **ov)
    plan = Plan.uniform(world, cfg.num_layers, dp_type=dp_type, precision="fp32",
                        global_batch_size=gbs)
    pm = parallel.build(M.build(cfg, seed=0), plan, seed=0, seq_len=seq)
    return _timed(lambda b: pm.train_step({"input_ids": b}), _data(cfg, gbs, seq, steps + 2))


def _torch(rank, world, ov, kind, gbs, seq, steps):
    import galvatron.models as M

    cfg = M.get_config("gpt2-debug", **ov)
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

    return _timed(step, _data(cfg, gbs, seq, steps + 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ov = dict(hidden_size=args.hidden, num_layers=args.layers, ffn_hidden=4 * args.hidden)
    gbs, seq = 8, 128
    configs = (("torch_ddp", _torch, "ddp"), ("galvatron_ddp", _ours, "ddp"),
               ("torch_fsdp2", _torch, "fsdp2"), ("galvatron_zero3", _ours, "zero3"))
    runs: dict[str, list[float]] = {c[0]: [] for c in configs}
    for _ in range(args.repeats):  # interleaved, so load changes hit every configuration
        for name, fn, kind in configs:
            runs[name].append(round(max(launch(2, fn, ov, kind, gbs, seq, args.steps)), 4))
    for name, _, _ in configs:
        print(json.dumps({"config": name, "world": 2, "model": "gpt2", **ov, "seq": seq,
                          "global_batch": gbs, "best_median_step_s": min(runs[name]),
                          "median_step_s_per_run": runs[name]}), flush=True)


if __name__ == "__main__":
    main()
