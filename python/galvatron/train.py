"""``python -m galvatron.train`` / ``galvatron train``: search (or load) a plan and train with it.

With no arguments it trains a small GPT on the built-in corpus with 4 local processes (gloo on
CPU), under a minute on a 2-core machine. Under ``torchrun`` it uses the ranks torchrun
started (``--nproc`` is ignored). See ``galvatron train --help`` and docs/training.md.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or TOML config file (sections: model, data, optim, parallel, checkpoint, logging)")
    p.add_argument("--model", dest="model.name", help="model name (galvatron models); default gpt2-mini")
    p.add_argument("--nproc", type=int, help="local processes to start (ignored under torchrun); default 4")
    p.add_argument("--steps", type=int, help="optimizer steps; default 100")
    p.add_argument("--seed", type=int)
    p.add_argument("--global-batch-size", type=int, dest="global_batch_size")
    p.add_argument("--seq-len", type=int, dest="model.seq_len")
    p.add_argument("--dtype", choices=("fp32", "bf16"), dest="model.dtype")
    p.add_argument("--plan", dest="parallel.plan", help="a plan JSON (ours or Galvatron-2's)")
    p.add_argument("--search", action="store_const", const=True, dest="parallel.search",
                   help="search a plan first (the default when no --plan or --pp is given)")
    p.add_argument("--memory-gb", type=float, dest="parallel.memory_gb", help="search budget per device")
    p.add_argument("--pp", type=int, dest="parallel.pp", help="uniform mode (one strategy for every layer): pipeline degree; selects parallel.mode uniform")
    p.add_argument("--tp", type=int, dest="parallel.tp")
    p.add_argument("--dp-type", dest="parallel.dp_type", choices=("ddp", "zero1", "zero2", "zero3"))
    p.add_argument("--checkpoint", action="store_const", const=True, dest="parallel.checkpoint",
                   help="uniform mode: activation checkpointing on every layer")
    p.add_argument("--num-microbatches", type=int, dest="parallel.num_microbatches")
    p.add_argument("--run-dir", dest="run_dir", help="run directory (metrics.jsonl, plan.json, checkpoints); "
                   "default: a fresh runs/<model>-<time>, linked from runs/latest")
    p.add_argument("--resume", action="store_const", const=True,
                   help="continue from the newest complete checkpoint (of runs/latest without --run-dir)")
    p.add_argument("--worker", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="galvatron train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args, rest = parser.parse_known_args(argv)
    from galvatron.training import job
    from galvatron.training.config import build_config
    from galvatron.training.launch import die_with_launcher, spawn, under_launcher
    from galvatron.training.rundir import point_latest, resolve_run_dir
    from galvatron.training.runlock import RunLock

    try:
        if args.worker:
            die_with_launcher()
            code = job.worker_main(args.worker)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)  # no interpreter teardown of torch's threads (see job.worker_main)
        flags = {k: v for k, v in vars(args).items() if k not in ("config", "worker")}
        cfg = build_config(args.config, flags, rest)
        if under_launcher():
            rank, world = job.init_distributed()
            import torch.distributed as dist

            cfg.run_dir = _agreed_run_dir(cfg, rank, dist)
            _lock_and_prepare_on_rank0(job, cfg, rank, world)
            return job.train_rank(cfg)
        cfg.run_dir, fresh = resolve_run_dir(cfg.run_dir, cfg.model.name, cfg.resume)
        with RunLock(cfg.run_dir) as lock:  # held until every rank has exited
            if lock.stale:
                print(f"note: replaced the lock of a job that is no longer running ({lock.stale})")
            job.prepare_run(cfg, cfg.nproc)
            if fresh:
                point_latest(cfg.run_dir)
            code = spawn(cfg.nproc, ["-m", "galvatron.train", "--worker", cfg.run_dir],
                         os.path.join(cfg.run_dir, "logs"))
        print(f"galvatron train: {'finished' if code == 0 else f'failed (exit {code})'}; "
              f"{job.summarize_run(cfg.run_dir)}; run directory {cfg.run_dir}")
        return code
    except ValueError as e:
        print(f"galvatron train: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # under torchrun: another rank died; one line, not a gloo traceback
        from galvatron.training import rank_errors

        if not rank_errors.is_lost_peer(e):
            raise
        print(rank_errors.lost_peer_message(int(os.environ.get("RANK", -1)), e), file=sys.stderr)
        return rank_errors.LOST_PEER_EXIT


def _agreed_run_dir(cfg, rank: int, dist) -> str:
    """Under torchrun: rank 0 resolves the run directory (a fresh one has a time stamp in its
    name) and every rank takes its answer; an error there is raised on every rank."""
    from galvatron.training.rundir import point_latest, resolve_run_dir

    answer: list = [None]
    if rank == 0:
        try:
            run_dir, fresh = resolve_run_dir(cfg.run_dir, cfg.model.name, cfg.resume)
            if fresh:
                os.makedirs(run_dir, exist_ok=True)
                point_latest(run_dir)
            answer = [("ok", run_dir)]
        except ValueError as e:
            answer = [("error", str(e))]
    dist.broadcast_object_list(answer, src=0)
    status, value = answer[0]
    if status == "error":
        raise ValueError(value)
    return value


_HELD = []  # under torchrun rank 0 holds the run-directory lock for the life of its process


def _lock_and_prepare_on_rank0(job, cfg, rank: int, world: int) -> None:
    """Under torchrun: rank 0 locks the run directory and prepares the run; every rank raises
    rank 0's error, if any (instead of waiting for a barrier until the timeout)."""
    import torch.distributed as dist

    from galvatron.training.runlock import RunLock

    box: list = [None]
    if rank == 0:
        try:
            _HELD.append(RunLock(cfg.run_dir).acquire())
            job.prepare_run(cfg, world)
        except ValueError as e:
            box[0] = str(e)
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise ValueError(box[0] if rank == 0 else f"rank 0 could not prepare the run: {box[0]}")


if __name__ == "__main__":
    raise SystemExit(main())
