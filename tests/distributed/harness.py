"""Spawn N gloo ranks (fork) that run one function; results back through a queue.

A failing rank reports its traceback and exits at once; the others then fail fast (their
gloo peers are gone) or are killed at the deadline."""

from __future__ import annotations

import datetime
import os
import tempfile

import torch.multiprocessing as mp


def _child(rank, world, store_path, fn, args, q):
    import torch
    import torch.distributed as dist

    from galvatron.parallel import fail_fast

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

    def report(text):
        q.put((rank, "error", text))
        q.close()
        q.join_thread()  # flush the report before the process exits

    with fail_fast(report=report):
        store = dist.FileStore(store_path, world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=60))
        out = fn(rank, world, *args)
        q.put((rank, "ok", out))
        dist.barrier()
        dist.destroy_process_group()


def launch(world: int, fn, *args, timeout_s: float = 240.0) -> list:
    """Run ``fn(rank, world, *args)`` on ``world`` ranks; returns the per-rank results."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "store")
        procs = [ctx.Process(target=_child, args=(r, world, path, fn, args, q))
                 for r in range(world)]
        for p in procs:
            p.start()
        results: dict[int, object] = {}
        errors = []
        import queue as _queue
        import time

        deadline = time.time() + timeout_s
        while len(results) + len(errors) < world and time.time() < deadline:
            try:
                rank, status, out = q.get(timeout=0.5)
            except _queue.Empty:
                dead = [r for r, p in enumerate(procs)
                        if p.exitcode not in (None, 0) and r not in results]
                if dead and q.empty():
                    errors.append(f"ranks {dead} died (exit codes "
                                  f"{[procs[r].exitcode for r in dead]})")
                    break
                continue
            if status == "ok":
                results[rank] = out
            else:
                errors.append(f"rank {rank}:\n{out}")
                break
        for p in procs:
            p.join(timeout=5 if not errors else 0.5)
            if p.is_alive():
                p.kill()
                p.join()
        if errors:
            raise RuntimeError("distributed run failed\n" + "\n".join(errors))
        if len(results) < world:
            raise TimeoutError(f"only {len(results)}/{world} ranks finished in {timeout_s} s")
        return [results[r] for r in range(world)]
