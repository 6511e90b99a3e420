"""One rank of ``galvatron check``: ``python -m galvatron.check.worker SPEC.json OUT_DIR``."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def run_spec(spec: dict[str, Any], gather: bool = False) -> Any:
    """Measure this rank (inside an initialised process group); ``gather``: every rank's
    result, in rank order (a collective)."""
    import torch.distributed as dist

    from galvatron.check.measure import measure_rank
    from galvatron.plan import Plan

    plan = Plan.from_dict(spec["plan"]).validate(world_size=dist.get_world_size())
    out = measure_rank(plan, spec["model"], spec["seq_len"], spec["overrides"], spec["steps"], spec["warmup"],
                       track_memory=spec["memory"])
    if not gather:
        return out
    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, out)
    return every


def main(argv: list[str]) -> int:
    import torch.distributed as dist

    from galvatron.training.job import init_distributed

    spec_path, out_dir = argv
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    rank, _ = init_distributed(timeout_s=300.0)
    try:
        out = run_spec(spec)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
            json.dump(out, f)
        return 0
    except ValueError as e:
        print(f"galvatron check: error on rank {rank}: {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
