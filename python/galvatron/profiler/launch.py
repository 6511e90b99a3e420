"""Running the hardware profiler: under ``torchrun`` or as N local processes, with a cache.

``profile_hardware(nproc=N)`` starts N worker processes (``python -m
galvatron.profiler.launch``) that meet through a file store, watches them and turns a rank
that fails, dies or outlives the time limit into a ``ValueError`` naming it (the others are
killed; nothing is written). Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) every rank calls
``profile_hardware()`` and rank 0 gets the profile.

Cache: results are stored under ``$GALVATRON_CACHE_DIR`` (default ``~/.cache/galvatron``) as
``hardware-<key>.json``, the key hashing the device kind, node layout, world size, backend,
torch version and the measurement options; ``use_cache=False`` re-measures.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any

from galvatron.profiler.hardware import HardwareOptions
from galvatron.profiles.hardware import HardwareProfile

_WORKER_ENV = "GALVATRON_PROFILER_WORKER"


def cache_dir() -> str:
    return os.environ.get("GALVATRON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "galvatron")


def _device_description(cuda: bool) -> str:
    if cuda:
        import torch

        return torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} x{os.cpu_count()} cpus"


# Bumped when what the profilers measure changes, so that cached profiles are measured again
# (2: the mean of the repeats on CPU instead of the minimum, no overlap when ranks fill the cores;
# 3: the model profiler times every shard degree round-robin; 4: 15 / 20 repeats of the
# collectives on CPU).
PROFILER_METHOD = 4


def cache_key(opts: HardwareOptions, world: int, num_nodes: int, backend: str, cuda: bool) -> str:
    import torch

    fields = {"device": _device_description(cuda), "world": world, "num_nodes": num_nodes, "backend": backend,
              "torch": torch.__version__, "sizes": list(opts.sizes or ()), "warmup": opts.warmup,
              "repeats": opts.repeats, "dtypes": list(opts.dtypes or ()), "quick": opts.quick,
              "method": PROFILER_METHOD}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _check_backend(backend: str | None) -> tuple[str, bool]:
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"backend: {backend!r} is not accepted; accepted: 'nccl', 'gloo'")
    if not dist.is_available():
        raise ValueError("backend: this torch build has no torch.distributed")
    if backend == "nccl" and not (cuda and dist.is_nccl_available()):
        raise ValueError("backend: 'nccl' needs CUDA devices and a torch built with NCCL; none here "
                         "(use --backend gloo on CPU)")
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("backend: 'gloo' is not available in this torch build")
    return backend, backend == "nccl"


def check_world(nproc: int, num_nodes: int, cuda: bool) -> None:
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 2:
        raise ValueError(f"nproc: need at least 2 processes to measure collectives, got {nproc!r}")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1 or nproc % num_nodes:
        raise ValueError(f"nodes: {num_nodes!r} must be an integer >= 1 dividing nproc={nproc}")
    if cuda:
        import torch

        have = torch.cuda.device_count()
        if nproc > have:
            raise ValueError(f"nproc: {nproc} local processes need {nproc} CUDA devices, this machine has {have}")


# ------------------------------------------------------------------------------- public entry


def profile_hardware(nproc: int | None = None, opts: HardwareOptions | None = None,
                     use_cache: bool = True, name: str | None = None) -> HardwareProfile | None:
    """Measure the hardware. Under torchrun: every rank calls this; rank 0 gets the profile,
    the others None. Otherwise ``nproc`` local processes are started (default 2)."""
    opts = opts or HardwareOptions()
    backend, cuda = _check_backend(opts.backend)
    opts = dataclasses.replace(opts, backend=backend).resolved(cuda)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and _WORKER_ENV not in os.environ:
        if nproc is not None and nproc != int(os.environ["WORLD_SIZE"]):
            raise ValueError(f"nproc: {nproc} given but torchrun started WORLD_SIZE={os.environ['WORLD_SIZE']}")
        return _run_under_torchrun(opts, use_cache, name)
    nproc = 2 if nproc is None else nproc
    check_world(nproc, opts.simulate_nodes, cuda)
    key = cache_key(opts, nproc, opts.simulate_nodes, backend, cuda)
    cached = _cache_get(key) if use_cache else None
    if cached is not None:
        if opts.verbose:
            print(f"[galvatron profile hardware] cached result {cached[1]} (pass --no-cache to re-measure)", flush=True)
        return cached[0]
    data = _spawn(nproc, opts)
    prof = _finish(data, name or f"{_device_description(cuda)}, {nproc} local ranks")
    if use_cache:
        _cache_put(key, prof)
    return prof


def cached_profile(nproc: int, opts: HardwareOptions | None = None) -> HardwareProfile | None:
    """The cached result of ``profile_hardware(nproc, opts)`` for local processes, or None."""
    opts = opts or HardwareOptions()
    backend, cuda = _check_backend(opts.backend)
    opts = dataclasses.replace(opts, backend=backend).resolved(cuda)
    hit = _cache_get(cache_key(opts, nproc, opts.simulate_nodes, backend, cuda))
    return None if hit is None else hit[0]


def _finish(data: dict[str, Any], name: str) -> HardwareProfile:
    data = dict(data, name=name)
    return HardwareProfile.from_dict(data)


def _cache_get(key: str) -> tuple[HardwareProfile, str] | None:
    path = os.path.join(cache_dir(), f"hardware-{key}.json")
    if not os.path.exists(path):
        return None
    try:
        return HardwareProfile.load(path), path
    except ValueError:
        return None  # a stale or broken cache entry is simply re-measured


def _cache_put(key: str, prof: HardwareProfile) -> None:
    d = cache_dir()
    try:
        os.makedirs(d, exist_ok=True)
        prof.save(os.path.join(d, f"hardware-{key}.json"))
    except (OSError, ValueError) as e:
        print(f"[galvatron profile hardware] warning: cannot write the cache in {d}: {e}", file=sys.stderr)


# ------------------------------------------------------------------------------- torchrun


def _device_for(local_rank: int, cuda: bool) -> Any:
    import torch

    if cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _run_under_torchrun(opts: HardwareOptions, use_cache: bool, name: str | None) -> HardwareProfile | None:
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world < 2 or world % local_world:
        raise ValueError(f"WORLD_SIZE={world} with LOCAL_WORLD_SIZE={local_world}: need >= 2 ranks and equal "
                         "ranks per node")
    cuda = opts.backend == "nccl"
    device = _device_for(int(os.environ.get("LOCAL_RANK", 0)), cuda)
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group(opts.backend, timeout=datetime.timedelta(seconds=opts.timeout_s),
                                device_id=device if cuda else None)
    try:
        key = cache_key(opts, world, world // local_world, opts.backend, cuda)
        hit = torch.zeros(1, device=device)
        cached = _cache_get(key) if (use_cache and rank == 0) else None
        if cached is not None:
            hit.fill_(1)
        dist.broadcast(hit, 0)
        if hit.item() > 0:
            if rank == 0 and opts.verbose:
                print(f"[galvatron profile hardware] cached result {cached[1]} (pass --no-cache to re-measure)",
                      flush=True)
            return cached[0] if rank == 0 else None
        from galvatron.profiler.hardware import measure

        data = measure(opts, device, local_world)
        if rank != 0:
            return None
        prof = _finish(data, name or f"{_device_description(cuda)}, {world} ranks")
        if use_cache:
            _cache_put(key, prof)
        return prof
    finally:
        if own_group:
            dist.destroy_process_group()


# ------------------------------------------------------------------------------- local processes


def _spawn(nproc: int, opts: HardwareOptions) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="galvatron-hw-") as tmp:
        result = os.path.join(tmp, "result.json")
        spec = json.dumps({"opts": dataclasses.asdict(opts), "store": os.path.join(tmp, "store"),
                           "result": result, "err_dir": tmp, "nodes": opts.simulate_nodes})
        procs = []
        threads = max(1, (os.cpu_count() or 1) // nproc)
        for r in range(nproc):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(nproc), LOCAL_RANK=str(r),
                       LOCAL_WORLD_SIZE=str(nproc), OMP_NUM_THREADS=str(threads))
            env[_WORKER_ENV] = spec
            out = None if r == 0 else subprocess.DEVNULL
            procs.append(subprocess.Popen([sys.executable, "-m", "galvatron.profiler.launch"], env=env,
                                          stdout=out, stderr=subprocess.DEVNULL))
        _watch(procs, tmp, opts.timeout_s)
        try:
            with open(result) as f:
                return json.load(f)
        except (OSError, ValueError):
            raise ValueError("hardware profiler: rank 0 finished without writing a result") from None


def _watch(procs: list[subprocess.Popen], err_dir: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [r for r, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                # the root cause: a rank killed by a signal, else the first Python error
                r = min(failed, key=lambda i: (codes[i] >= 0, _error_time(err_dir, i), i))
                raise ValueError(f"hardware profiler: rank {r} failed (exit code {codes[r]}): {_rank_error(err_dir, r)}")
            if all(c == 0 for c in codes):
                return
            if time.monotonic() > deadline:
                running = [r for r, c in enumerate(codes) if c is None]
                raise ValueError(f"hardware profiler: timed out after {timeout_s:g} s; ranks {running} still "
                                 "running (a hung or very slow rank; raise --timeout if the sweep is just long)")
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()


def _error_time(err_dir: str, rank: int) -> float:
    try:
        return os.path.getmtime(os.path.join(err_dir, f"error.{rank}"))
    except OSError:
        return float("inf")


def _rank_error(err_dir: str, rank: int) -> str:
    try:
        with open(os.path.join(err_dir, f"error.{rank}")) as f:
            lines = f.read().strip().splitlines()
        return lines[-1] if lines else "no message"
    except OSError:
        return "the process died without a Python error (killed, or crashed in native code)"


def _worker_main() -> int:
    """Entry of one local worker process (see ``_spawn``)."""
    spec = json.loads(os.environ[_WORKER_ENV])
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    try:
        import torch
        import torch.distributed as dist

        from galvatron.profiler.hardware import measure

        opts = HardwareOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["opts"].items()})
        cuda = opts.backend == "nccl"
        device = _device_for(rank, cuda)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        dist.init_process_group(opts.backend, init_method=f"file://{spec['store']}", rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=opts.timeout_s),
                                device_id=device if cuda else None)
        try:
            data = measure(opts, device, world // spec["nodes"])
        finally:
            dist.destroy_process_group()
        if rank == 0:
            tmp = spec["result"] + ".tmp"
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.replace(tmp, spec["result"])
        return 0
    except BaseException:
        with open(os.path.join(spec["err_dir"], f"error.{rank}"), "w") as f:
            f.write(traceback.format_exc())
        return 1


if __name__ == "__main__":
    raise SystemExit(_worker_main())
