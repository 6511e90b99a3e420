"""One rank's measurement of a plan: step time, time per category, peak live tensor bytes.

Runs inside an initialised process group (local processes started by :mod:`galvatron.check`,
or ``torchrun``). Every rank builds its part of the model under the plan, runs ``warmup``
steps, then ``steps`` measured steps with :mod:`galvatron.parallel.instrument` recording, and
one more step under the live-tensor tracker (it slows the step, so it is not timed).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from galvatron.plan import Plan


def synthetic_batch(model_name: str, overrides: dict[str, Any], global_batch: int, seq_len: int,
                    step: int, seed: int = 1) -> dict[str, torch.Tensor]:
    """A random batch every rank draws identically: token ids (and decoder ids for T5), or
    images and labels for vision models."""
    from galvatron import models

    cfg = models.get_config(model_name, **overrides)
    g = torch.Generator().manual_seed(seed * 100003 + step)
    if cfg.family in ("vit", "swin"):
        return {"pixel_values": torch.randn(global_batch, cfg.num_channels, cfg.image_size, cfg.image_size,
                                            generator=g),
                "labels": torch.randint(0, cfg.num_labels, (global_batch,), generator=g)}
    b = {"input_ids": torch.randint(0, cfg.vocab_size, (global_batch, seq_len), generator=g)}
    if cfg.family == "t5":
        b["decoder_input_ids"] = torch.randint(0, cfg.vocab_size, (global_batch, seq_len), generator=g)
        b["labels"] = torch.randint(0, cfg.vocab_size, (global_batch, seq_len), generator=g)
    return b


def measure_rank(plan: Plan, model_name: str, seq_len: int | None, overrides: dict[str, Any],
                 steps: int, warmup: int, seed: int = 0, track_memory: bool = True) -> dict[str, Any]:
    """This rank's figures (see the module docstring). Step times are wall seconds between a
    barrier before the step and the end of the step on this rank."""
    import torch.distributed as dist

    from galvatron import models, parallel
    from galvatron.parallel import instrument as I

    model = models.build(model_name, seed=seed, **overrides)
    seq = seq_len or getattr(model.config, "max_seq_len", None)
    pm = parallel.build(model, plan, seed=seed, seq_len=seq, max_grad_norm=1.0)
    dev = pm.ctx.device

    def step(i: int) -> float:
        batch = synthetic_batch(model_name, overrides, plan.global_batch_size, seq or 0, i)
        dist.barrier()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pm.train_step(batch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for i in range(warmup):
        step(i)
    times, per_cat = [], []
    for i in range(warmup, warmup + steps):
        rec = I.Recorder(dev)
        with I.recording(rec):
            times.append(step(i))
            totals = rec.totals()
        totals["dp_comm_async_span"] = sum(rec.async_spans)
        per_cat.append(totals)
    out: dict[str, Any] = {
        "rank": dist.get_rank(), "stage": pm.ctx.stage, "step_times_s": times,
        "step_time_s": statistics.median(times),
        "time_s": {k: statistics.median(t[k] for t in per_cat) for k in per_cat[0]},
    }
    if track_memory:
        out["memory_bytes"] = measure_peak_memory(pm, lambda: synthetic_batch(
            model_name, overrides, plan.global_batch_size, seq or 0, warmup + steps))
    return out


def measure_peak_memory(pm, make_batch, step=None) -> dict[str, int]:
    """Peak live tensor bytes of one training step by kind (CPU: torch's MemTracker; CUDA:
    ``max_memory_allocated`` for the total, the tracker's split beside it). ``step(batch)``
    runs the step (default ``pm.train_step``)."""
    from galvatron.parallel import instrument as I

    dev = pm.ctx.device
    batch = make_batch()
    step = step or pm.train_step
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    tracker = I.live_tensor_tracker()
    tracker.track_model(*pm.chunks, *_shared_modules(pm), optimizers=pm.optimizer.optimizers)
    with tracker:
        step(batch)
    out = tracker.peak_by_kind()
    if dev.type == "cuda":
        out["tracker_total"] = out.get("total", 0)
        out["total"] = int(torch.cuda.max_memory_allocated(dev))
    return out


def _shared_modules(pm) -> list:
    return [u.module for u in pm.units if getattr(u, "replicated", False)]
