"""Benchmark of the layout kernels (galvatron.parallel.layout) against plain torch.

Prints one JSON line per case: kernel, shape, dtype, threads, our time, the torch-expression
time (the ``reference_*`` function: movedim/reshape + cat), the best plain-torch time we know
(``copy_`` of a permuted view into a preallocated buffer, one pass), speed-ups and GB/s
(bytes read + written by our kernel / our time). Shapes are LLaMA-7B-like: H=32, d=128.

    python benchmarks/run_comm_bench.py --quick            # a few small CPU cases
    python benchmarks/run_comm_bench.py                    # default CPU sweep (modest sizes)
    python benchmarks/run_comm_bench.py --full --cuda      # add b=4, s=8192; CUDA when present
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from galvatron.parallel import layout as L

HEADS, HEAD_DIM = 32, 128


# ---- best plain-torch versions: one copy_ per tensor into a preallocated buffer ---------------


def torch_copy_pack(tensors, dim, n):
    total = sum(t.numel() for t in tensors)
    buf = torch.empty(n, total // n, dtype=tensors[0].dtype, device=tensors[0].device)
    off = 0
    for t in tensors:
        size = t.numel() // n
        chunk = list(t.shape)
        chunk[dim] //= n
        src = t.unflatten(dim, (n, chunk[dim])).movedim(dim, 0)
        buf[:, off : off + size].view(n, *chunk).copy_(src)
        off += size
    return buf


def torch_copy_unpack(buf, dim, n, shapes):
    rows = buf.view(n, -1)
    outs, off = [], 0
    for shape in shapes:
        out = torch.empty(shape, dtype=buf.dtype, device=buf.device)
        chunk = list(shape)
        chunk[dim] //= n
        size = out.numel() // n
        out.unflatten(dim, (n, chunk[dim])).movedim(dim, 0).copy_(
            rows[:, off : off + size].view(n, *chunk)
        )
        outs.append(out)
        off += size
    return outs


# ---- timing -------------------------------------------------------------------------------------


def _once_ms(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def time_ms(fns: list[Callable[[], object]], device: str, reps: int) -> list[float]:
    """Median ms of each function. Calls are interleaved (f0, f1, f2, f0, ...) so that load
    from other processes and the allocator's state affect every variant alike."""
    for fn in fns:  # warm-up: allocator, page faults, thread pools
        fn()
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, ts in zip(fns, times, strict=True):
            ts.append(_once_ms(fn, device))
    return [statistics.median(ts) for ts in times]


def cases(b: int, s: int, world: int, dtype: torch.dtype, device: str):
    """(kernel, shape text, ours, torch expression, best torch, bytes moved) per kernel."""
    sl, hl = s // world, HEADS // world
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(b, sl, HEADS, HEAD_DIM, device=device, generator=gen).to(dtype)
        for _ in range(3)
    )
    o = torch.randn(b, s, hl, HEAD_DIM, device=device, generator=gen).to(dtype)
    qkv_buf = L.ulysses_pack_qkv(q, k, v, world)
    out_buf = L.ulysses_pack_out(o, world)
    qkv_shape = (b, s, hl, HEAD_DIM)
    out_shape = (b, sl, HEADS, HEAD_DIM)
    qkv_bytes = 2 * qkv_buf.numel() * qkv_buf.element_size()
    out_bytes = 2 * out_buf.numel() * out_buf.element_size()
    shp = f"b={b} s={s} H={HEADS} d={HEAD_DIM} P={world}"
    yield (
        "ulysses_pack_qkv", shp,
        lambda: L.ulysses_pack_qkv(q, k, v, world),
        lambda: L.reference_ulysses_pack_qkv(q, k, v, world),
        lambda: torch_copy_pack([q, k, v], 2, world),
        qkv_bytes,
    )  # fmt: skip
    yield (
        "ulysses_unpack_qkv", shp,
        lambda: L.ulysses_unpack_qkv(qkv_buf, world, qkv_shape, qkv_shape, qkv_shape),
        lambda: L.reference_ulysses_unpack_qkv(qkv_buf, world, qkv_shape, qkv_shape, qkv_shape),
        lambda: torch_copy_unpack(qkv_buf, 1, world, [qkv_shape] * 3),
        qkv_bytes,
    )  # fmt: skip
    yield (
        "ulysses_pack_out", shp,
        lambda: L.ulysses_pack_out(o, world),
        lambda: L.reference_ulysses_pack_out(o, world),
        lambda: torch_copy_pack([o], 1, world),
        out_bytes,
    )  # fmt: skip
    yield (
        "ulysses_unpack_out", shp,
        lambda: L.ulysses_unpack_out(out_buf, world, out_shape),
        lambda: L.reference_ulysses_unpack_out(out_buf, world, out_shape),
        lambda: torch_copy_unpack(out_buf, 2, world, [out_shape]),
        out_bytes,
    )  # fmt: skip


def run(configs, dtypes, device: str, threads_list, reps: int) -> None:
    for b, s, world in configs:
        for dtype in dtypes:
            for threads in threads_list if device == "cpu" else [0]:
                if device == "cpu":
                    torch.set_num_threads(threads)
                for kernel, shape, ours, expr, best, nbytes in cases(b, s, world, dtype, device):
                    ours_ms, expr_ms, best_ms = time_ms([ours, expr, best], device, reps)
                    row = {
                        "kernel": kernel,
                        "device": device,
                        "shape": shape,
                        "dtype": str(dtype).replace("torch.", ""),
                        "threads": threads if device == "cpu" else None,
                        "ours_ms": round(ours_ms, 3),
                        "torch_expr_ms": round(expr_ms, 3),
                        "torch_copy_ms": round(best_ms, 3),
                        "speedup_vs_expr": round(expr_ms / ours_ms, 2),
                        "speedup_vs_copy": round(best_ms / ours_ms, 2),
                        "gbps": round(nbytes / ours_ms / 1e6, 2),
                    }
                    print(json.dumps(row), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few small CPU cases")
    ap.add_argument("--full", action="store_true", help="add b=4 and s=8192 (needs ~3 GiB)")
    ap.add_argument("--cuda", action="store_true", help="also run on CUDA when available")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU cases")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    max_threads = torch.get_num_threads()
    threads_list = sorted({1, max_threads})
    if args.quick:
        configs = [(1, 2048, 2), (1, 2048, 8)]
        dtypes, reps = [torch.bfloat16], args.reps or 5
    else:
        bs, ss = ([1, 2, 4], [2048, 4096, 8192]) if args.full else ([1, 2], [2048, 4096])
        configs = [(b, s, p) for b in bs for s in ss for p in (2, 4, 8)]
        dtypes, reps = [torch.bfloat16, torch.float32], args.reps or 9
    if not args.no_cpu:
        run(configs, dtypes, "cpu", threads_list, reps)
    if args.cuda and torch.cuda.is_available():
        run(configs, dtypes, "cuda", [0], max(reps, 20))
    torch.set_num_threads(max_threads)


if __name__ == "__main__":
    main()
