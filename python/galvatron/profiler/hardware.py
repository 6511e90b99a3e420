"""Hardware profiler: what runs on every rank (``measure``), given an initialised process group.

For every collective the runtime uses (all-reduce, all-gather, reduce-scatter, all-to-all,
point-to-point) and every group a plan can produce (sizes 2, 4, ... up to the world; adjacent
ranks, strided ranks inside a node, ranks spread over nodes), message sizes are swept and
``time = alpha + bytes / bandwidth`` is fitted (:func:`galvatron.profiler.fit.fit_alpha_beta`;
the raw ``[bytes, ms]`` points are kept). All groups of one kind run *at the same time* (e.g.
the four 2-rank groups of 8 GPUs), as they do in training, and the slowest rank's time
counts. Message sizes follow :mod:`galvatron.profiles.hardware`: the full tensor for
all-reduce, the gathered output for all-gather, the full input for reduce-scatter, what one
rank sends for all-to-all, the payload for p2p (timed as half a ping-pong).

Timing: CUDA events around the operation on GPU (blocking c10d calls make the current stream
wait for the NCCL stream, so the end event follows the collective); a barrier on the group
then ``time.perf_counter`` on CPU. Warm-up runs, then the median of the repeats (GPU) or
their mean (CPU: see :func:`galvatron.profiler.fit.summarize_ms`).

Also measured: compute/communication overlap (``overlap_slowdown``), achieved matmul TFLOP/s
per dtype (``peak_tflops``), device memory, the framework's own memory, the communication
library's buffers, and an AdamW step's time per parameter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from galvatron.profiler.fit import fit_alpha_beta, summarize_ms
from galvatron.profiles.hardware import HARDWARE_FORMAT_VERSION, Op, Placement, powers_of_two

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class HardwareOptions:
    """What to measure and how hard. ``None`` fields get defaults by device and ``quick``."""

    backend: str | None = None  # nccl | gloo; default: nccl with CUDA, else gloo
    quick: bool = False
    sizes: tuple[int, ...] | None = None  # message sizes in bytes
    warmup: int | None = None
    repeats: int | None = None
    dtypes: tuple[str, ...] | None = None  # for the matmul rate
    simulate_nodes: int = 1  # local runs only: treat the ranks as this many nodes
    timeout_s: float = 300.0
    verbose: bool = True
    fail_rank: int | None = None  # fault injection for tests: this rank raises
    hang_rank: int | None = None  # fault injection for tests: this rank sleeps forever
    kill_rank: int | None = None  # fault injection for tests: this rank is killed (SIGKILL)

    def resolved(self, cuda: bool) -> HardwareOptions:
        import dataclasses

        if cuda:
            sizes = [2**k for k in range(12, 31, 2)] if not self.quick else [2**k for k in (12, 18, 24)]
            warm, reps = (5, 20) if not self.quick else (2, 5)
            dtypes = ("bf16", "fp16", "fp32")
        else:
            sizes = [2**k for k in range(12, 25, 2)] if not self.quick else [2**k for k in (12, 16, 20, 24)]
            # a gloo collective's time is bimodal on a shared CPU (2 ms at best, 6-10 ms typical
            # for 2 MiB; benchmarks/probe_gloo_allreduce.py): enough repeats for a stable mean
            warm, reps = (2, 20) if not self.quick else (2, 15)
            dtypes = ("fp32", "bf16")
        return dataclasses.replace(
            self, sizes=tuple(self.sizes or sizes), warmup=self.warmup if self.warmup is not None else warm,
            repeats=self.repeats if self.repeats is not None else reps, dtypes=tuple(self.dtypes or dtypes))


# ------------------------------------------------------------------------------- groups


def group_kinds(world: int, gpus_per_node: int, num_nodes: int) -> list[tuple[Placement, int, list[list[int]]]]:
    """Every (placement, size) a plan can produce, each with the groups that partition the
    world (ranks left over sit out). Strided groups are only listed where they differ from
    the consecutive ones (the cost model falls back from strided to consecutive)."""
    kinds = []
    for n in powers_of_two(world, start=2):
        if n <= gpus_per_node:
            cons = [list(range(b, b + n)) for b in range(0, world - n + 1, n)
                    if b % gpus_per_node + n <= gpus_per_node]
            kinds.append((Placement.CONSECUTIVE, n, cons))
            stride = gpus_per_node // n
            if stride > 1:
                strided = [[node * gpus_per_node + j + stride * k for k in range(n)]
                           for node in range(num_nodes) for j in range(stride)]
                kinds.append((Placement.STRIDED, n, strided))
        if num_nodes > 1 and world % n == 0:
            stride = world // n
            if stride * (n - 1) >= gpus_per_node:  # spans nodes
                kinds.append((Placement.INTER_NODE, n, [[j + stride * k for k in range(n)] for j in range(stride)]))
    return kinds


def p2p_kinds(world: int, gpus_per_node: int, num_nodes: int) -> list[tuple[Placement, list[list[int]]]]:
    """Pairs of ranks for point-to-point: adjacent, half a node apart, one node apart."""
    kinds = [(Placement.CONSECUTIVE, [[r, r + 1] for r in range(0, world - 1, 2)
                                      if r % gpus_per_node + 1 < gpus_per_node])]
    half = gpus_per_node // 2
    if half > 1:
        kinds.append((Placement.STRIDED, [[node * gpus_per_node + j, node * gpus_per_node + j + half]
                                          for node in range(num_nodes) for j in range(half)]))
    if num_nodes > 1:
        kinds.append((Placement.INTER_NODE, [[r, r + gpus_per_node] for r in range(world)
                                             if (r // gpus_per_node) % 2 == 0 and r + gpus_per_node < world]))
    return [(p, g) for p, g in kinds if g]


# ------------------------------------------------------------------------------- timing


def time_once_ms(fn: Callable[[], Any], cuda: bool) -> float:
    """Milliseconds of one call: CUDA events on a GPU, perf_counter on CPU."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


class Timer:
    """Time of ``fn`` in ms (median on GPU, mean on CPU): CUDA events on GPU, barrier +
    perf_counter on CPU."""

    def __init__(self, device: torch.device, warmup: int, repeats: int) -> None:
        self.cuda = device.type == "cuda"
        self.warmup, self.repeats = warmup, repeats

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time_ms(self, fn: Callable[[], Any], group: Any = None, barrier: bool = True) -> float:
        return self.time_many([fn], group, barrier)[0]

    def time_many(self, fns: list[Callable[[], Any]], group: Any = None, barrier: bool = True) -> list[float]:
        """Times of several closures (e.g. one per message size), timed round-robin so that
        a slow spell of the machine hits all of them alike rather than a few sizes."""
        for fn in fns:
            for _ in range(self.warmup):
                fn()
        self.sync()
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(self.repeats):
            for i, fn in enumerate(fns):
                if barrier and group is not None:
                    dist.barrier(group=group)
                samples[i].append(self._once(fn))
        return [summarize_ms(s, self.cuda) for s in samples]

    def _once(self, fn: Callable[[], Any]) -> float:
        return time_once_ms(fn, self.cuda)


def _collective_fn(op: Op, nbytes: int, n: int, group: Any, device: torch.device) -> tuple[Callable[[], Any], int]:
    """A closure running ``op`` on a message of about ``nbytes`` (rounded to n fp32 elements),
    and the exact byte count."""
    numel = max(n, (nbytes // 4) // n * n)
    full = torch.empty(numel, dtype=torch.float32, device=device).fill_(1.0)
    if op is Op.ALL_REDUCE:
        return (lambda: dist.all_reduce(full, group=group)), numel * 4
    part = torch.empty(numel // n, dtype=torch.float32, device=device).fill_(1.0)
    if op is Op.ALL_GATHER:
        return (lambda: dist.all_gather_into_tensor(full, part, group=group)), numel * 4
    if op is Op.REDUCE_SCATTER:
        return (lambda: dist.reduce_scatter_tensor(part, full, group=group)), numel * 4
    out = torch.empty_like(full)
    return (lambda: dist.all_to_all_single(out, full, group=group)), numel * 4


# ------------------------------------------------------------------------------- context


class _Ctx:
    def __init__(self, opts: HardwareOptions, device: torch.device, gpus_per_node: int) -> None:
        self.opts = opts
        self.device = device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.gpus_per_node = gpus_per_node
        self.num_nodes = self.world // gpus_per_node
        self.timer = Timer(device, opts.warmup, opts.repeats)
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        if self.rank == 0 and self.opts.verbose:
            print(f"[galvatron profile hardware {time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def max_over_world(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    def mean_over_world(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world).tolist()


def _make_groups(groups: list[list[int]], rank: int) -> Any:
    """Create every group (all ranks must take part in each new_group); return this rank's."""
    mine = None
    for ranks in groups:
        g = dist.new_group(ranks)
        if rank in ranks:
            mine = g
    return mine


def _sweep_collectives(ctx: _Ctx) -> list[dict[str, Any]]:
    out = []
    for placement, n, groups in group_kinds(ctx.world, ctx.gpus_per_node, ctx.num_nodes):
        mine = _make_groups(groups, ctx.rank)
        for op in (Op.ALL_REDUCE, Op.ALL_GATHER, Op.REDUCE_SCATTER, Op.ALL_TO_ALL):
            sizes = [float(max(n, (nbytes // 4) // n * n) * 4) for nbytes in ctx.opts.sizes]
            times = [0.0] * len(sizes)  # ranks outside every group of this kind sit out
            if mine is not None:
                fns = [_collective_fn(op, nbytes, n, mine, ctx.device)[0] for nbytes in ctx.opts.sizes]
                times = ctx.timer.time_many(fns, mine)
                del fns
            times = ctx.max_over_world(times)
            out.append(_entry(ctx, op, n, placement, list(zip(sizes, times, strict=True)), len(groups)))
    return out


def _sweep_p2p(ctx: _Ctx) -> list[dict[str, Any]]:
    out = []
    for placement, pairs in p2p_kinds(ctx.world, ctx.gpus_per_node, ctx.num_nodes):
        mine = _make_groups(pairs, ctx.rank)
        pair = next((p for p in pairs if ctx.rank in p), None)
        sizes = [float(max(1, nbytes // 4) * 4) for nbytes in ctx.opts.sizes]
        times = [0.0] * len(sizes)
        if pair is not None:
            first, peer = ctx.rank == pair[0], pair[1] if ctx.rank == pair[0] else pair[0]
            fns = [_ping_pong(torch.ones(int(b) // 4, device=ctx.device), first, peer) for b in sizes]
            times = [t / 2 for t in ctx.timer.time_many(fns, mine)]  # one way = half the round trip
            del fns
        times = ctx.max_over_world(times)
        out.append(_entry(ctx, Op.P2P, 2, placement, list(zip(sizes, times, strict=True)), len(pairs)))
    return out


def _ping_pong(buf: torch.Tensor, first: bool, peer: int) -> Callable[[], None]:
    def run() -> None:
        if first:
            dist.send(buf, peer)
            dist.recv(buf, peer)
        else:
            dist.recv(buf, peer)
            dist.send(buf, peer)

    return run


def _entry(ctx: _Ctx, op: Op, n: int, placement: Placement, points: list[tuple[float, float]],
           num_groups: int) -> dict[str, Any]:
    alpha, bw = fit_alpha_beta(points)
    ctx.log(f"{op.value:<15} n={n:<4} {placement.value:<12} x{num_groups} groups: alpha {alpha * 1e3:8.1f} us, "
            f"{bw:8.3f} GB/s ({len(points)} sizes {int(points[0][0])}..{int(points[-1][0])} B)")
    return {"op": op.value, "group_size": n, "placement": placement.value, "alpha_ms": alpha,
            "bandwidth_gbps": bw, "points": [list(p) for p in points]}


def _with_strided_fallbacks(colls: list[dict[str, Any]], gpus_per_node: int) -> list[dict[str, Any]]:
    """Where a strided group is the same set of ranks as a consecutive one (n = ranks per
    node), list it anyway, as a copy, so every (op, size, placement) a node allows is present."""
    have = {(c["op"], c["group_size"], c["placement"]) for c in colls}
    extra = []
    for c in colls:
        key = (c["op"], c["group_size"], Placement.STRIDED.value)
        if c["placement"] == Placement.CONSECUTIVE.value and key not in have:
            if c["op"] == Op.P2P.value or c["group_size"] <= gpus_per_node:
                extra.append({**c, "placement": Placement.STRIDED.value})
                have.add(key)
    return colls + extra


# ------------------------------------------------------------------------------- compute side


def _matmul_tflops(ctx: _Ctx) -> dict[str, Any]:
    """Achieved dense matmul rate per dtype (max over a few square shapes), all ranks busy."""
    cuda = ctx.device.type == "cuda"
    shapes = (2048, 4096, 8192) if cuda else (256, 512)
    if ctx.opts.quick:
        shapes = (1024, 2048) if cuda else (128, 256)
    peaks, points = {}, {}
    for name in ctx.opts.dtypes:
        dt = _DTYPES[name]
        best, pts = 0.0, []
        for n in shapes:
            a = torch.randn(n, n, device=ctx.device).to(dt)
            b = torch.randn(n, n, device=ctx.device).to(dt)
            ms = ctx.timer.time_ms(lambda a=a, b=b: torch.mm(a, b), barrier=False)
            tflops = 2 * n**3 / (ms * 1e-3) / 1e12
            pts.append([n, ms, tflops])
            best = max(best, tflops)
        peaks[name] = best
        points[name] = pts
    vals = ctx.mean_over_world([peaks[k] for k in ctx.opts.dtypes])
    peaks = dict(zip(ctx.opts.dtypes, vals, strict=True))
    ctx.log("matmul TFLOP/s (mean over ranks): " + ", ".join(f"{k} {v:.4g}" for k, v in peaks.items()))
    return {"peak_tflops": peaks, "matmul_points": points}


def _overlap(ctx: _Ctx) -> dict[str, Any]:
    """Slowdown when a world all-reduce and matmuls run at the same time.

    Compute alone ``a``, communication alone ``b``, both together ``T`` (the all-reduce is
    started asynchronously, then the matmuls run). The cost model charges
    ``max(a, b) + (s - 1) * min(a, b)``; solving for ``s`` gives ``overlap_slowdown``. The
    matmul count is chosen so that ``a`` is close to ``b`` (where overlap matters most).
    """
    cuda = ctx.device.type == "cuda"
    nbytes = (2**26 if cuda else 2**22) // (4 if ctx.opts.quick else 1)
    msg = torch.ones(nbytes // 4, device=ctx.device)
    n = 4096 if cuda else 256
    dt = torch.bfloat16 if cuda else torch.float32
    x, w = torch.randn(n, n, device=ctx.device).to(dt), torch.randn(n, n, device=ctx.device).to(dt)
    world = dist.group.WORLD
    comm_ms = ctx.timer.time_ms(lambda: dist.all_reduce(msg), world)
    one_ms = ctx.timer.time_ms(lambda: torch.mm(x, w), barrier=False)
    reps = int(ctx.max_over_world([max(1.0, round(comm_ms / max(one_ms, 1e-6)))])[0])

    def compute() -> None:
        for _ in range(reps):
            torch.mm(x, w)

    comp_ms = ctx.timer.time_ms(compute, world)
    comp_in_ms, both_ms = _time_together(ctx, msg, compute, world)
    comp_ms, comm_ms, both_ms, comp_in_ms = ctx.max_over_world([comp_ms, comm_ms, both_ms, comp_in_ms])
    lo, hi = min(comp_ms, comm_ms), max(comp_ms, comm_ms)
    measured = max(1.0, 1.0 + (both_ms - hi) / lo) if lo > 0 else 1.0
    slowdown = max(measured, cpu_no_overlap_slowdown(cuda, ctx.gpus_per_node))
    ctx.log(f"overlap: compute {comp_ms:.2f} ms ({comp_in_ms:.2f} ms while communicating), all-reduce "
            f"{comm_ms:.2f} ms, together {both_ms:.2f} ms -> overlap_slowdown {slowdown:.3f}")
    return {"overlap_slowdown": slowdown,
            "overlap": {"measured_slowdown": measured, "cpu_cores": os.cpu_count(), "compute_ms": comp_ms, "comm_ms": comm_ms, "together_ms": both_ms,
                        "compute_while_communicating_ms": comp_in_ms, "compute_slowdown": comp_in_ms / comp_ms,
                        "message_bytes": nbytes, "matmuls": reps, "matmul_n": n}}


def cpu_no_overlap_slowdown(cuda: bool, local_processes: int, cores: int | None = None) -> float:
    """The least ``overlap_slowdown`` of a CPU machine whose cores are all taken by ranks: 2.0
    (compute and communication add up), else 1.0.

    A gloo collective is CPU work (copies, reductions, the transport threads' socket I/O) of
    the process that issues it. When every core runs a rank's compute, that work can only run
    in the compute's place, so nothing overlaps. The short overlap measurement of
    :func:`_overlap` (a few milliseconds) reads 1.7-2.2 on 2 ranks on 2 cores; measured on a
    2-process GPT, ZeRO-3's FSDP2 collectives were exposed in full
    (docs/cost_model.md, "Corrections from measurement")."""
    cores = cores or os.cpu_count() or 1
    return 2.0 if not cuda and local_processes >= cores else 1.0


def _time_together(ctx: _Ctx, msg: torch.Tensor, compute: Callable[[], None], group: Any) -> tuple[float, float]:
    """(compute ms, total ms) with the all-reduce started asynchronously before the compute:
    how much the compute itself slows down, and when both are done."""
    t = ctx.timer
    mids, ends = [], []
    for r in range(t.warmup + t.repeats):
        dist.barrier(group=group)
        if t.cuda:
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            ev[0].record()
        t0 = time.perf_counter()
        work = dist.all_reduce(msg, async_op=True)
        compute()
        if t.cuda:
            ev[1].record()
        t1 = time.perf_counter()
        work.wait()  # on GPU: the current stream waits for the NCCL stream
        if t.cuda:
            ev[2].record()
            ev[2].synchronize()
            mid, end = ev[0].elapsed_time(ev[1]), ev[0].elapsed_time(ev[2])
        else:
            mid, end = (t1 - t0) * 1e3, (time.perf_counter() - t0) * 1e3
        if r >= t.warmup:
            mids.append(mid)
            ends.append(end)
    return summarize_ms(mids, t.cuda), summarize_ms(ends, t.cuda)


def optimizer_step_like_runtime(params: list[torch.nn.Parameter], opt: torch.optim.Optimizer,
                                max_norm: float = 1.0) -> None:
    """What the runtime's optimizer region does on one rank (``ParallelModel.clip_grad_norm``
    and ``Optimizers``): the global gradient norm, summed per gradient in float64, the
    gradients scaled by the clip coefficient, then AdamW with ``foreach=False``."""
    sq = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for p in params:
        sq += p.grad.double().pow(2).sum()
    coef = min(1.0, max_norm / (float(sq.sqrt()) + 1e-6))
    for p in params:
        p.grad.mul_(coef)
    opt.step()


def _optimizer(ctx: _Ctx) -> dict[str, Any]:
    """Optimizer step time per fp32 parameter (all ranks stepping at once, as in training): the
    runtime's gradient clipping and AdamW (``foreach=False``) over tensors of 2^18 elements
    (a 512 x 512 weight), 2^22 parameters on CPU (their 64 MiB of parameters, gradients and
    moments exceed the caches, as a model's do; 2^26 on GPU)."""
    cuda = ctx.device.type == "cuda"
    numel = 2**26 if cuda else 2**22
    if cuda and ctx.opts.quick:
        numel //= 4
    chunk = 2**18
    params = [torch.nn.Parameter(torch.randn(chunk, device=ctx.device)) for _ in range(numel // chunk)]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, lr=1e-4, foreach=False)
    ms = ctx.timer.time_ms(lambda: optimizer_step_like_runtime(params, opt), barrier=False)
    per_param = ctx.mean_over_world([ms / numel])[0]
    ctx.log(f"optimizer (clip + AdamW): {ms:.2f} ms for {numel} parameters -> {per_param * 1e6:.3f} ns/param")
    return {"optimizer_ms_per_param": per_param, "optimizer": {"numel": numel, "tensor_numel": chunk,
                                                               "step_ms": ms, "clip": True, "foreach": False}}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _used_outside_torch(device: torch.device) -> int:
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def device_memory(device: torch.device, local_world: int) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(1, local_world))


# ------------------------------------------------------------------------------- entry


def measure(opts: HardwareOptions, device: torch.device, gpus_per_node: int) -> dict[str, Any] | None:
    """Run every measurement on this rank; rank 0 returns the :class:`HardwareProfile` fields
    (as a dict ready for ``HardwareProfile.from_dict``), the other ranks return None."""
    ctx = _Ctx(opts, device, gpus_per_node)
    if opts.fail_rank == ctx.rank:
        raise RuntimeError(f"fault injected on rank {ctx.rank} (fail_rank)")
    if opts.hang_rank == ctx.rank:
        time.sleep(10**6)
    if opts.kill_rank == ctx.rank:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    cuda = device.type == "cuda"
    base_outside = _used_outside_torch(device) if cuda else _rss_bytes()
    ctx.log(f"world {ctx.world} = {ctx.num_nodes} node(s) x {gpus_per_node}, backend {dist.get_backend()}, "
            f"device {torch.cuda.get_device_name(device) if cuda else 'cpu'}, "
            f"{len(opts.sizes)} sizes, warmup {opts.warmup}, repeats {opts.repeats}")
    colls = _sweep_collectives(ctx) + _sweep_p2p(ctx)
    colls = _with_strided_fallbacks(colls, gpus_per_node)
    comm_buffer = max(0, _used_outside_torch(device) - base_outside) if cuda else 0
    result: dict[str, Any] = {}
    result.update(_overlap(ctx))
    result.update(_matmul_tflops(ctx))
    result.update(_optimizer(ctx))
    overhead, comm_buffer = (int(v) for v in ctx.max_over_world([float(base_outside), float(comm_buffer)]))
    mem = device_memory(device, gpus_per_node)
    dist.barrier()
    if ctx.rank != 0:
        return None
    measurements = {k: result.pop(k) for k in ("overlap", "matmul_points", "optimizer")}
    measurements.update({"sizes_bytes": list(opts.sizes), "warmup": opts.warmup, "repeats": opts.repeats,
                         "quick": opts.quick, "torch": torch.__version__, "elapsed_s": time.perf_counter() - ctx.t0,
                         "framework_overhead": "CUDA context + NCCL before the sweep (device memory outside "
                                               "torch's allocator)" if cuda else "resident set size of a rank"})
    return {"version": HARDWARE_FORMAT_VERSION, "kind": "hardware", "num_nodes": ctx.num_nodes, "gpus_per_node": gpus_per_node,
            "device_memory_bytes": mem, "collectives": colls, "backend": dist.get_backend(),
            "overlap_slowdown": result["overlap_slowdown"], "optimizer_ms_per_param": result["optimizer_ms_per_param"],
            "framework_overhead_bytes": overhead, "comm_buffer_bytes": comm_buffer,
            "peak_tflops": result["peak_tflops"], "matmul_efficiency": 1.0, "source": "measured",
            "measurements": measurements}
