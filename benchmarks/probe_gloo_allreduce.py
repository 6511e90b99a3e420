"""Probe: a 2 MiB gloo all-reduce (the tensor-parallel message of the fidelity benchmark) between
two processes under four conditions: the hardware profiler's (same buffer, barrier before), a
fresh tensor, after a compute segment (a matmul and a 32 MiB pass that flushes the caches) with
and without a barrier. Prints mean / median / min ms per rank.

Usage: ``OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 benchmarks/probe_gloo_allreduce.py``.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

NUMEL = 16 * 128 * 256  # 2 MiB of fp32: batch 16 x seq 128 x hidden 256


def main() -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    hot = torch.empty(NUMEL).fill_(1.0)
    a, w = torch.randn(2048, 256), torch.randn(256, 1024)
    big = torch.randn(8 * 2**20)

    def compute() -> None:
        torch.mm(a, w)
        big.mul_(1.0)

    def timed(x: torch.Tensor, barrier: bool) -> float:
        if barrier:
            dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(x)
        return (time.perf_counter() - t0) * 1e3

    res: dict[str, list[float]] = {"A same buffer, barrier": [], "B fresh tensor, barrier": [],
                                   "C after compute, barrier": [], "D after compute, no barrier": []}
    for _ in range(24):
        res["A same buffer, barrier"].append(timed(hot, True))
        res["B fresh tensor, barrier"].append(timed(torch.randn(NUMEL), True))
        compute()
        res["C after compute, barrier"].append(timed(torch.randn(NUMEL), True))
        compute()
        res["D after compute, no barrier"].append(timed(torch.randn(NUMEL), False))
    for k, v in res.items():
        v = v[4:]  # warm-up
        print(f"rank {rank} {k}: mean {statistics.fmean(v):.2f} median {statistics.median(v):.2f} "
              f"min {min(v):.2f} ms", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
