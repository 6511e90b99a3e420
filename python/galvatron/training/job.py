"""The training job: prepare a run (config, plan, prediction), then train on every rank.

``prepare_run`` runs once (in the launching process, or on rank 0 under ``torchrun``): it
resolves the configuration, obtains the plan (a plan file, global-mode flags, or a search),
prints it with its predicted step time and memory, and writes ``RUN/config.yaml`` and
``RUN/plan.json``. ``train_rank`` runs on every rank: it builds this rank's part of the model
under the plan, resumes from the newest intact checkpoint when asked, trains, evaluates, writes
``RUN/metrics.jsonl`` (rank 0), checkpoints every N steps and at the end, and on SIGTERM/SIGINT
saves a checkpoint and exits cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from galvatron.plan import Plan
from galvatron.training import data as D
from galvatron.training import rank_errors, runfiles
from galvatron.training.checkpoint import (
    CheckpointManager,
    check_rng_state,
    rng_state,
    set_rng_state,
)
from galvatron.training.config import TrainConfig, dump_yaml
from galvatron.training.guards import NonFiniteGuard, finite_state, non_finite
from galvatron.training.metrics import MetricsWriter, Progress
from galvatron.training.resume import check_steps
from galvatron.training.resume import describe as describe_resume
from galvatron.training.schedule import lr_at

GiB = 2**30


def _log(msg: str) -> None:
    print(msg, flush=True)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


# ------------------------------------------------------------------------------ the plan
def _hardware(cfg: TrainConfig, world: int):
    """The hardware profile of the run: ``parallel.hardware`` (a measured profile), else a
    preset (``parallel.hardware_preset``; on CUDA default ``a100-80g-sxm``), else on CPU a quick
    measurement of this machine's collectives with ``world`` local processes (about 10 s once;
    cached under ``~/.cache/galvatron``), the ``cpu-gloo`` preset under torchrun and for one
    process (there are no collectives to measure). Kept in the
    run directory (``hardware.json``) so every rank and a resumed run use the same one."""
    import galvatron

    kept = os.path.join(cfg.run_dir, "hardware.json")
    if os.path.exists(kept):
        hw = galvatron.HardwareProfile.load(kept)
        if hw.num_nodes * hw.gpus_per_node == world:
            return hw
    if cfg.parallel.hardware:
        hw = galvatron.HardwareProfile.load(cfg.parallel.hardware)
    elif torch.cuda.is_available() or cfg.parallel.hardware_preset or _under_launcher() or world == 1:
        preset = cfg.parallel.hardware_preset or ("a100-80g-sxm" if torch.cuda.is_available() else "cpu-gloo")
        if torch.cuda.is_available() and preset != "cpu-gloo":
            gpn = min(world, torch.cuda.device_count() or world)
            hw = galvatron.hardware_preset(preset, num_nodes=max(1, world // gpn), gpus_per_node=gpn)
        else:
            hw = galvatron.hardware_preset(preset, num_nodes=1, gpus_per_node=world)
    else:
        from galvatron.profiler.hardware import HardwareOptions
        from galvatron.profiler.launch import cache_dir, cached_profile, profile_hardware

        opts = HardwareOptions(quick=True, verbose=False)
        hw = cached_profile(world, opts)
        if hw is None:
            _log(f"measuring this machine's collectives with {world} local processes "
                 f"(quick, once: cached under {cache_dir()})")
            hw = profile_hardware(world, opts)
    if os.path.isdir(cfg.run_dir):
        hw.save(kept)
    return hw


def _under_launcher() -> bool:
    from galvatron.training.launch import under_launcher

    return under_launcher()


MEASURED_MAX_PARAMS = 5_000_000  # on CPU, models up to this size are measured (seconds)


def model_profile_for(cfg: TrainConfig, hw, world: int = 1) -> Any:
    """The model profile the search uses: on CPU without a measured hardware profile, a quick
    measurement of this machine for small models (seconds; cached by machine, model, sequence
    length, dtype and process count, see :mod:`galvatron.training.profile_cache`; a copy is kept
    in the run directory); otherwise the analytic profile from the model spec."""
    import galvatron
    from galvatron import models

    seq = None if cfg.data.kind == "images" else cfg.model.seq_len  # vision: the model's patches
    small = models.spec(cfg.model.name, **cfg.model.overrides).param_count() <= MEASURED_MAX_PARAMS
    if not torch.cuda.is_available() and not cfg.parallel.hardware and small:
        mp = _measured_model_profile(cfg, seq, world)
        if os.path.isdir(cfg.run_dir):
            mp.save(os.path.join(cfg.run_dir, "model_profile.json"))
        return mp
    return galvatron.model_profile(cfg.model.name, seq_len=seq, hardware=hw,
                                   precision=cfg.model.dtype, **cfg.model.overrides)


def _measured_model_profile(cfg: TrainConfig, seq: int | None, world: int) -> Any:
    from galvatron.profiler.model import ModelProfilerOptions, core_share, profile_model
    from galvatron.profiles.hardware import powers_of_two
    from galvatron.training import profile_cache

    degree = powers_of_two(world)[-1]  # the largest shard degree a rank can see
    key = profile_cache.model_cache_key(cfg.model.name, cfg.model.overrides, seq, cfg.model.dtype, world,
                                        degree, core_share(world))
    cached = profile_cache.load_cached(key)
    if cached is not None:
        return cached
    # Each rank runs one thread; with more ranks than cores the profiler scales the times by
    # the share of a core each rank gets (ModelProfilerOptions.processes).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        mp = profile_model(cfg.model.name, seq_len=seq, precision=cfg.model.dtype,
                           opts=ModelProfilerOptions(max_degree=degree, verbose=False, repeats=5, processes=world),
                           **cfg.model.overrides)
    finally:
        torch.set_num_threads(threads)
    where = profile_cache.store(key, mp)
    _log(f"measured {cfg.model.name} on this machine (seq {seq or 'of the model'}, {cfg.model.dtype}, "
         f"{_plural(world, 'process', 'processes')})" + (f"; cached as {where}" if where else ""))
    return mp


def obtain_plan(cfg: TrainConfig, world: int, num_layers: int) -> tuple[Plan, str]:
    """The plan of the run and how it was obtained."""
    import galvatron
    from galvatron.plan_io import load_plan

    p = cfg.parallel
    if p.plan:
        plan = load_plan(p.plan, world_size=world)
        if plan.global_batch_size != cfg.global_batch_size:
            _log(f"note: the plan's global batch size {plan.global_batch_size} replaces --global-batch-size "
                 f"{cfg.global_batch_size}")
        return plan.validate(world_size=world, num_layers=num_layers), f"plan file {p.plan}"
    if p.pp > 0:
        plan = Plan.uniform(world, num_layers, pp=p.pp, tp=p.tp, sp=p.sp, sp_kind=p.sp_kind or None,
                            dp_type=p.dp_type, checkpoint=p.checkpoint, schedule=p.schedule,
                            num_microbatches=max(1, p.num_microbatches),
                            global_batch_size=cfg.global_batch_size,
                            virtual_stages=2 if p.schedule == "interleaved_1f1b" else 1,
                            precision=cfg.model.dtype)
        return plan, "global-mode flags"
    if not p.search:
        plan = Plan.uniform(world, num_layers, global_batch_size=cfg.global_batch_size, precision=cfg.model.dtype)
        return plan, "plain data parallelism (no plan, no search)"
    hw = _hardware(cfg, world)
    mp = model_profile_for(cfg, hw, world)
    space: dict[str, Any] = {"num_threads": 1}
    if p.num_microbatches:
        space["num_microbatches"] = [p.num_microbatches]
    res = galvatron.search(mp, hw, memory_gb=p.memory_gb or None, global_batch_size=cfg.global_batch_size,
                           **space)
    return res.plan, f"search on {hw.name} ({res.search_time_s:.2f} s, {res.speedup_over_uniform or 1:.3f}x the best uniform plan)"


def prepare_run(cfg: TrainConfig, world: int) -> Plan:
    """Once per run: run directory, resolved config, plan (printed with its prediction)."""
    from galvatron import models

    try:
        os.makedirs(cfg.run_dir, exist_ok=True)
        probe = os.path.join(cfg.run_dir, ".write_test")
        with open(probe, "w", encoding="utf-8") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ValueError(f"run_dir {cfg.run_dir}: not writable: {e.strerror or e}") from None
    if cfg.resume:  # refuse before writing anything: nothing intact to resume from, or a step past --steps
        found_path = CheckpointManager(cfg.run_dir, collective=False).resume_candidate()
        check_steps(int(CheckpointManager.inspect(found_path)[0]["step"]), cfg.steps, found_path)
    mcfg = models.get_config(cfg.model.name, **cfg.model.overrides)
    num_layers = len(models.spec(mcfg).layer_types)
    plan, how = obtain_plan(cfg, world, num_layers)
    if cfg.model.dtype != plan.precision.value:
        plan = plan.replace(precision=cfg.model.dtype)
    import galvatron

    try:
        hw = _hardware(cfg, world)
        pred = galvatron.estimate(plan, model_profile_for(cfg, hw, world), hw)
        plan = plan.replace(predicted=pred.to_dict())
    except ValueError as e:  # e.g. a hardware profile for another world size
        _log(f"note: no prediction for this plan: {e}")
        pred = None
    seq = cfg.model.seq_len if cfg.data.kind != "images" else models.spec(mcfg).seq_len
    plan = plan.replace(model={"name": cfg.model.name, "overrides": dict(cfg.model.overrides), "seq_len": seq})
    how += _previous_plan_note(os.path.join(cfg.run_dir, "plan.json"), plan, how)
    cfg.global_batch_size = plan.global_batch_size  # the saved config says what the run uses
    runfiles.start(cfg.run_dir)  # a resume writes them as pending until the checkpoint is loaded
    runfiles.write(cfg.run_dir, "plan.json", plan.validate().to_json(), pending=cfg.resume)
    runfiles.write(cfg.run_dir, "config.yaml", dump_yaml(cfg), pending=cfg.resume)
    _log(f"run directory {cfg.run_dir} | model {cfg.model.name} | {_plural(world, 'process', 'processes')} | "
         f"plan from {how}")
    _log(plan.replace(predicted=None).summary())  # the prediction follows, with its breakdown
    if pred is not None:
        _log("predicted " + pred.summary().replace("\n", "\n  "))
    return plan


def _previous_plan_note(path: str, plan: Plan, how: str) -> str:
    """For a run directory that already has a plan (a resumed run): whether this run's plan,
    re-searched or not, is the same."""
    if not os.path.exists(path):
        return ""
    try:
        old = Plan.load(path)
    except ValueError:
        return ""
    same = old.replace(predicted=None, model=None) == plan.replace(predicted=None, model=None)
    verb = "re-searched" if how.startswith("search") else "replaced"
    return f"; {verb}: {'the same plan as' if same else 'differs from'} the run's previous plan.json"


# ------------------------------------------------------------------------------ one rank
class _Stop:
    requested = False


def _on_signal(sig, _frame) -> None:
    if _Stop.requested:  # a second signal: stop now
        raise KeyboardInterrupt
    _Stop.requested = True


def init_distributed(timeout_s: float = 300.0) -> tuple[int, int]:
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
        except RuntimeError as e:  # DistNetworkError: MASTER_PORT taken, master unreachable
            raise rank_errors.start_error(e) from None
    return dist.get_rank(), dist.get_world_size()


def train_rank(cfg: TrainConfig) -> int:
    """Train on this rank (inside an initialised process group). Returns an exit code."""
    from galvatron import parallel
    from galvatron.training import runtime_adapter as RA

    rank, world = dist.get_rank(), dist.get_world_size()
    plan = Plan.load(runfiles.path(cfg.run_dir, "plan.json")).validate(world_size=world)
    data = D.TokenData.load(cfg.data.kind, cfg.data.path, cfg.data.token_dtype, cfg.data.eval_fraction,
                            cfg.model.seq_len) if cfg.data.kind != "images" else None
    overrides = dict(cfg.model.overrides)
    if data is not None:
        overrides.setdefault("vocab_size", max(512, data.vocab_size))
    jm = RA.resolve_model(cfg, overrides)  # once per job; passed to what needs the model
    pm = RA.build(parallel, cfg, jm, plan)
    ckpt = CheckpointManager(cfg.run_dir, keep=cfg.checkpoint.keep, rank=rank, barrier=dist.barrier,
                             warn=lambda msg: print(f"warning: {msg}", file=sys.stderr, flush=True))
    start = 0
    if cfg.resume:
        found = ckpt.resume_point()  # the newest intact one (damaged ones named and skipped), or an error
        if found is not None:
            path, state, tensors = found
            start = int(state["step"])
            check_steps(start, cfg.steps, path)
            check_rng_state(state.get("rng"), f"{path}/train_state.json")
            RA.load_state(pm, path, state, tensors)
            set_rng_state(state["rng"])
            if rank == 0:
                runfiles.accept(cfg.run_dir)  # only now does this run's config replace the last one
                how, *notes = describe_resume(state.get("plan"), plan, state.get("plan_summary", "?"))
                _log(f"resumed from {path} at step {start} ({how})")
                for note in notes:
                    _log(note)
    metrics = (MetricsWriter(cfg.run_dir, resume_step=start if cfg.resume else None,
                             tensorboard=cfg.logging.tensorboard) if rank == 0 else None)
    progress = Progress(cfg.steps) if rank == 0 else None
    predicted = (plan.predicted or {}).get("step_time_s")
    predicted_peaks = RA.predicted_peaks(plan, world)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)
    tokens_per_step = plan.global_batch_size * jm.seq_len
    flops_per_step = RA.model_flops_per_step(jm, plan.global_batch_size)
    peak_tflops = _device_peak_tflops(cfg, world)
    step = start
    guard = NonFiniteGuard(cfg.optim.nonfinite_patience)
    try:
        while step < cfg.steps:
            lr = lr_at(step, cfg.steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps)
            RA.set_lr(pm, lr)
            batch = RA.batch(cfg, jm, data, step, plan.global_batch_size)
            t0 = time.perf_counter()
            loss, grad_norm = RA.train_step(pm, batch)
            dt = time.perf_counter() - t0
            step += 1
            peaks = _gather_int(RA.peak_memory(pm), pm.ctx.device)  # live tensor bytes
            if min(peaks) < 0:  # not measured yet (a pipeline's first step on CPU)
                peaks = None
            record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "step_time_s": dt,
                      "tokens_per_s": tokens_per_step / dt, "peak_memory_bytes": peaks and max(peaks),
                      "peak_memory_bytes_per_rank": peaks, "predicted_step_time_s": predicted,
                      "predicted_peak_memory_bytes_per_rank": predicted_peaks}
            if flops_per_step:
                record["model_tflops_per_s"] = flops_per_step / dt / 1e12
                if peak_tflops:
                    record["mfu"] = record["model_tflops_per_s"] / (world * peak_tflops)
            if cfg.logging.eval_every and step % cfg.logging.eval_every == 0 and data is not None:
                record["eval_loss"] = RA.eval_loss(pm, cfg, jm, data, step, plan.global_batch_size)
            if rank == 0:
                metrics.write(record)
                if step % cfg.logging.every == 0 or step == cfg.steps:
                    extra = f" | eval {record['eval_loss']:.4f}" if "eval_loss" in record else ""
                    progress.update(step, loss, record["tokens_per_s"], dt, predicted, extra)
            stop = _agree(_Stop.requested, pm.ctx.device)
            guard.update(step, _agree(bool(non_finite(loss, grad_norm)), pm.ctx.device),
                         " and ".join(non_finite(loss, grad_norm)))
            saved = False
            if (cfg.checkpoint.every and step % cfg.checkpoint.every == 0) or stop or step == cfg.steps:
                saved = _save(ckpt, pm, step, cfg, plan, guard.healthy)
            if stop:
                if rank == 0:
                    _log(f"stopped by a signal after step {step}; " + (
                        "checkpoint saved, resume with --resume" if saved else "no checkpoint (non-finite state)"))
                return 0 if saved else 3
    finally:
        if metrics is not None:
            metrics.close()
    if cfg.checkpoint.export_hf:
        RA.export_hf(pm, cfg, jm, os.path.join(cfg.run_dir, "hf"))
        if rank == 0:
            _log(f"exported a Hugging Face model to {os.path.join(cfg.run_dir, 'hf')}")
    return 0


def _gather_int(value: int, device: torch.device) -> list[int]:
    """``value`` of every rank (rank order); a collective (tensors on the runtime's device)."""
    out = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(out, torch.tensor([value], dtype=torch.int64, device=device))
    return [int(t.item()) for t in out]


def _device_peak_tflops(cfg: TrainConfig, world: int) -> float | None:
    """Per-device peak TFLOP/s for the run's dtype: on CUDA the datasheet peak of the GPU when
    it is one the presets know (A100, H100, H200), else the hardware profile the plan was made
    with (a preset's datasheet peak, or on CPU the measured matmul rate); None if unknown."""
    from galvatron.profiles.presets import datasheet_peak_tflops

    if torch.cuda.is_available():
        peak = datasheet_peak_tflops(torch.cuda.get_device_name(), cfg.model.dtype)
        if peak:
            return float(peak)
    try:
        peak = _hardware(cfg, world).peak_tflops.get(cfg.model.dtype)
    except ValueError:
        return None
    return float(peak) if peak else None


def _agree(flag: bool, device: torch.device) -> bool:
    """True on every rank when any rank saw a stop signal."""
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _save(ckpt: CheckpointManager, pm, step: int, cfg: TrainConfig, plan: Plan, healthy: bool = True) -> bool:
    """Collective: checkpoint step ``step`` unless the state is not finite (then False)."""
    from galvatron.training import runtime_adapter as RA

    tensors, layout = RA.checkpoint_state(pm)  # collective
    if _agree(not (healthy and finite_state(tensors)), pm.ctx.device):
        if dist.get_rank() == 0:
            _log(f"not saving a checkpoint at step {step}: the state is not finite")
        if step == cfg.steps:
            raise ValueError(f"step {step}: training ended with a non-finite state; no checkpoint written")
        return False
    state = {"step": step, "rng": rng_state(), "seed": cfg.seed, "world_size": plan.world_size,
             "plan_summary": f"pp={plan.pp}, {_plural(len(set(plan.layers)), 'layer strategy', 'layer strategies')}", "plan": plan.to_dict()}
    if layout is not None:  # rank 0 writes train_state.json
        state["layout"] = layout
    ckpt.save(step, tensors, state)
    return True


def worker_main(run_dir: str) -> int:
    """Entry of one local rank started by the launcher. A rank that finished cleanly waits for
    the others and leaves its process group to the process exit (the caller ends the process
    with ``os._exit``): tearing gloo down in-process aborted a finished rank now and then under
    load ("terminate called without an active exception") after its last checkpoint was saved,
    turning a complete run into a failed one."""
    from galvatron.training.config import build_config

    cfg = build_config(runfiles.path(run_dir, "config.yaml"))
    clean = False
    try:
        init_distributed()
        code = train_rank(cfg)
        dist.barrier()  # every rank is done with the group
        clean = True
        return code
    except ValueError as e:
        print(f"galvatron: error on rank {os.environ.get('RANK', '?')}: {e}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as e:  # another rank died: one line, not a gloo traceback
        if not rank_errors.is_lost_peer(e):
            raise
        print(rank_errors.lost_peer_message(dist.get_rank(), e), file=sys.stderr, flush=True)
        return rank_errors.LOST_PEER_EXIT
    finally:
        if dist.is_initialized() and not clean:
            dist.destroy_process_group()


def summarize_run(run_dir: str) -> str:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return "no metrics written"
    from galvatron.training.metrics import read_rows

    rows = read_rows(path)
    if not rows:
        return "no steps run"
    first, last = rows[0], rows[-1]
    loss = [f"{r['loss']:.4f}" if isinstance(r.get("loss"), (int, float)) else str(r.get("nonfinite", {}).get("loss"))
            for r in (first, last)]
    return (f"loss {loss[0]} -> {loss[1]} over steps {first['step']}-{last['step']}; "
            f"median step {sorted(r['step_time_s'] for r in rows)[len(rows) // 2]:.3f} s")
