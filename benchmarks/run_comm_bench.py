"""Benchmark of the layout kernels (galvatron.parallel.packing) against plain torch.

Prints one JSON line per case: kernel, shape, dtype, threads and median times (ms) of
  ours                 the galvatron.parallel.packing function (allocates its output)
  torch_expr           the ``reference_*`` torch expression (movedim/reshape + cat)
  torch_copy           the best plain torch we know: torch.empty + one ``copy_`` of a
                       permuted view per tensor
  ours_prealloc        ours writing into a reused output (``dst=`` / ``dsts=``)
  torch_copy_prealloc  torch ``copy_`` into the same reused output
with speed-ups (torch / ours) and GB/s (bytes read + written / time). Shapes are
LLaMA-7B-like: H=32, d=128. On CPU a fresh output costs page faults, often more than the copy,
hence the *_prealloc pair, which compares the copies alone.

    python benchmarks/run_comm_bench.py --quick            # a few small CPU cases
    python benchmarks/run_comm_bench.py                    # default CPU sweep (modest sizes)
    python benchmarks/run_comm_bench.py --full --cuda      # add b=4, s=8192; CUDA when present
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from collections.abc import Callable

import torch

from galvatron.parallel import packing
from galvatron.profiler.hardware import time_once_ms

HEADS, HEAD_DIM = 32, 128


# ---- best plain-torch versions: one copy_ per tensor into a preallocated buffer ---------------


def torch_copy_pack(tensors, dim, n, dst=None):
    total = sum(t.numel() for t in tensors)
    buf = torch.empty(n, total // n, dtype=tensors[0].dtype, device=tensors[0].device)
    buf = buf if dst is None else dst.view(n, total // n)
    off = 0
    for t in tensors:
        size = t.numel() // n
        chunk = list(t.shape)
        chunk[dim] //= n
        src = t.unflatten(dim, (n, chunk[dim])).movedim(dim, 0)
        buf[:, off : off + size].view(n, *chunk).copy_(src)
        off += size
    return buf


def torch_copy_unpack(buf, dim, n, shapes, dsts=None):
    rows = buf.view(n, -1)
    outs, off = [], 0
    for i, shape in enumerate(shapes):
        out = torch.empty(shape, dtype=buf.dtype, device=buf.device) if dsts is None else dsts[i]
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
    return time_once_ms(fn, device == "cuda")


def time_ms(
    fns: list[Callable[[], object]], device: str, reps: int, blocked: bool = False
) -> list[float]:
    """Median ms of each function. Calls are interleaved, in a fresh random order each round,
    so that load from other processes and the allocator's state (fresh pages after a free)
    affect every variant alike."""
    for fn in fns:  # warm-up: allocator, page faults, thread pools
        fn()
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times: list[list[float]] = [[] for _ in fns]
    rng = random.Random(0)
    order = list(range(len(fns)))
    if blocked:  # each function's reps back to back (its thread pool stays warm)
        for fn, ts in zip(fns, times, strict=True):
            fn()
            ts.extend(_once_ms(fn, device) for _ in range(reps))
        return [statistics.median(ts) for ts in times]
    for _ in range(reps):
        rng.shuffle(order)
        for i in order:
            times[i].append(_once_ms(fns[i], device))
    return [statistics.median(ts) for ts in times]


def cases(b: int, s: int, world: int, dtype: torch.dtype, device: str):
    """(kernel, shape text, {variant: fn}, bytes moved) per kernel. Variants: ours, torch_expr
    (reference_* expression), torch_copy (empty + copy_), and *_prealloc (into a reused output)."""
    sl, hl = s // world, HEADS // world
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(b, sl, HEADS, HEAD_DIM, device=device, generator=gen).to(dtype)
        for _ in range(3)
    )
    o = torch.randn(b, s, hl, HEAD_DIM, device=device, generator=gen).to(dtype)
    qkv_buf = packing.ulysses_pack_qkv(q, k, v, world)
    out_buf = packing.ulysses_pack_out(o, world)
    qkv_shape = (b, s, hl, HEAD_DIM)
    out_shape = (b, sl, HEADS, HEAD_DIM)
    qkv_bytes = 2 * qkv_buf.numel() * qkv_buf.element_size()
    out_bytes = 2 * out_buf.numel() * out_buf.element_size()
    qkv_dst, out_dst = torch.empty_like(qkv_buf), torch.empty_like(out_buf)
    qkv_dsts = [torch.empty(qkv_shape, dtype=dtype, device=device) for _ in range(3)]
    o_dst = torch.empty(out_shape, dtype=dtype, device=device)
    shp = f"b={b} s={s} H={HEADS} d={HEAD_DIM} P={world}"
    yield (
        "ulysses_pack_qkv",
        shp,
        qkv_bytes,
        {
            "ours": lambda: packing.ulysses_pack_qkv(q, k, v, world),
            "torch_expr": lambda: packing.reference_ulysses_pack_qkv(q, k, v, world),
            "torch_copy": lambda: torch_copy_pack([q, k, v], 2, world),
            "ours_prealloc": lambda: packing.ulysses_pack_qkv(q, k, v, world, dst=qkv_dst),
            "torch_copy_prealloc": lambda: torch_copy_pack([q, k, v], 2, world, qkv_dst),
        },
    )
    shapes3 = (qkv_shape, qkv_shape, qkv_shape)
    yield (
        "ulysses_unpack_qkv",
        shp,
        qkv_bytes,
        {
            "ours": lambda: packing.ulysses_unpack_qkv(qkv_buf, world, *shapes3),
            "torch_expr": lambda: packing.reference_ulysses_unpack_qkv(qkv_buf, world, *shapes3),
            "torch_copy": lambda: torch_copy_unpack(qkv_buf, 1, world, shapes3),
            "ours_prealloc": lambda: packing.ulysses_unpack_qkv(qkv_buf, world, *shapes3, dsts=qkv_dsts),
            "torch_copy_prealloc": lambda: torch_copy_unpack(qkv_buf, 1, world, shapes3, qkv_dsts),
        },
    )
    yield (
        "ulysses_pack_out",
        shp,
        out_bytes,
        {
            "ours": lambda: packing.ulysses_pack_out(o, world),
            "torch_expr": lambda: packing.reference_ulysses_pack_out(o, world),
            "torch_copy": lambda: torch_copy_pack([o], 1, world),
            "ours_prealloc": lambda: packing.ulysses_pack_out(o, world, dst=out_dst),
            "torch_copy_prealloc": lambda: torch_copy_pack([o], 1, world, out_dst),
        },
    )
    yield (
        "ulysses_unpack_out",
        shp,
        out_bytes,
        {
            "ours": lambda: packing.ulysses_unpack_out(out_buf, world, out_shape),
            "torch_expr": lambda: packing.reference_ulysses_unpack_out(out_buf, world, out_shape),
            "torch_copy": lambda: torch_copy_unpack(out_buf, 2, world, [out_shape]),
            "ours_prealloc": lambda: packing.ulysses_unpack_out(out_buf, world, out_shape, dst=o_dst),
            "torch_copy_prealloc": lambda: torch_copy_unpack(
                out_buf, 2, world, [out_shape], [o_dst]
            ),
        },
    )


def run(configs, dtypes, device: str, threads_list, reps: int, blocked: bool) -> None:
    for b, s, world in configs:
        for dtype in dtypes:
            for threads in threads_list if device == "cpu" else [0]:
                if device == "cpu":
                    torch.set_num_threads(threads)
                for kernel, shape, nbytes, fns in cases(b, s, world, dtype, device):
                    ms = dict(
                        zip(fns, time_ms(list(fns.values()), device, reps, blocked), strict=True)
                    )
                    row = {
                        "kernel": kernel,
                        "device": device,
                        "shape": shape,
                        "dtype": str(dtype).replace("torch.", ""),
                        "threads": threads if device == "cpu" else None,
                        "timing": "blocked" if blocked else "interleaved",
                        **{f"{name}_ms": round(t, 3) for name, t in ms.items()},
                        "speedup_vs_expr": round(ms["torch_expr"] / ms["ours"], 2),
                        "speedup_vs_copy": round(ms["torch_copy"] / ms["ours"], 2),
                        "speedup_prealloc": round(
                            ms["torch_copy_prealloc"] / ms["ours_prealloc"], 2
                        ),
                        "gbps": round(nbytes / ms["ours"] / 1e6, 2),
                        "gbps_prealloc": round(nbytes / ms["ours_prealloc"] / 1e6, 2),
                    }
                    print(json.dumps(row), flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few small CPU cases")
    ap.add_argument("--full", action="store_true", help="add b=4 and s=8192 (needs ~3 GiB)")
    ap.add_argument("--cuda", action="store_true", help="also run on CUDA when available")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU cases")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument(
        "--blocked",
        action="store_true",
        help="time each variant's reps back to back instead of interleaving the variants",
    )
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
        run(configs, dtypes, "cpu", threads_list, reps, args.blocked)
    if args.cuda and torch.cuda.is_available():
        run(configs, dtypes, "cuda", [0], max(reps, 20), args.blocked)
    torch.set_num_threads(max_threads)


if __name__ == "__main__":
    main()
