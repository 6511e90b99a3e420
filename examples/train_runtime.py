"""Train a zoo model under a plan with the runtime (CPU/gloo example).

    torchrun --nproc-per-node 4 examples/train_runtime.py \\
        --model gpt2-debug --plan examples/plans/gpt2-debug_4cpu_mixed.json

Every rank draws the same global batch from a fixed seed; rank 0 prints the loss per step.
"""

from __future__ import annotations

import argparse
import datetime

import torch
import torch.distributed as dist

import galvatron.models as M
from galvatron import Plan, parallel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-debug")
    ap.add_argument("--plan", required=True)
    ap.add_argument("--num-layers", type=int, default=None)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    with parallel.fail_fast():
        plan = Plan.load(args.plan)
        overrides = {"num_layers": args.num_layers} if args.num_layers else {}
        model = M.build(args.model, seed=0, **overrides)
        pm = parallel.build(model, plan, seq_len=args.seq, max_grad_norm=1.0)
        g = torch.Generator().manual_seed(0)
        for step in range(args.steps):
            ids = torch.randint(0, model.config.vocab_size, (plan.global_batch_size, args.seq),
                                generator=g)
            loss = pm.train_step({"input_ids": ids})
            if dist.get_rank() == 0:
                print(f"step {step} loss {loss:.4f} grad_norm {pm.last_grad_norm:.3f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
