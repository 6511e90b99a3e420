"""``galvatron check --fake``: the real runtime on fake tensors, one process per rank.

Every rank measured runs in its own forked process with the "fake" process group of the
plan's world size (collectives return at once) and ``FakeTensorMode`` (tensors have shapes,
dtypes and devices but no data): the model is built on the meta device, its tensors are made
fake, :func:`galvatron.parallel.build` builds this rank's part (tensor parallelism, Ulysses,
redistribution, FSDP2 / ZeRO-1 / DDP, checkpointing are the runtime's own code), and two
training steps run; the second is measured with the live-tensor tracker (optimizer states
exist then, as in every later step).

The steps mirror :meth:`ParallelModel.train_step` without the parts that read tensor values
(the label count is taken from the real batch; the loss is not read; gradients are not
clipped). With ``pp > 1`` the micro-batches of this rank's chunks run in the schedule's order
(GPipe: every forward then every backward; 1F1B: ``pp - stage`` forwards first, as
``torch.distributed.pipelining``'s ``Schedule1F1B``; interleaved 1F1B: the action order of
torch's ``ScheduleInterleaved1F1B`` for this rank), with a fake activation block in the
pipeline boundary layout standing in for what the previous stage would send. Decoder-only
token models only when ``pp > 1`` (the boundary carries one hidden stream).
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from typing import Any

import torch

from galvatron.plan import Plan


def _materialise(model, mode) -> None:
    """Replace every meta parameter and buffer of ``model`` by a fake tensor of the same shape
    (tied parameters stay one tensor)."""
    new: dict[int, torch.nn.Parameter] = {}
    with mode:
        for mod in model.modules():
            for k, p in list(mod._parameters.items()):
                if p is None:
                    continue
                if id(p) not in new:
                    new[id(p)] = torch.nn.Parameter(torch.empty(p.shape, dtype=p.dtype),
                                                    requires_grad=p.requires_grad)
                mod._parameters[k] = new[id(p)]
            for k, b in list(mod._buffers.items()):
                if b is not None and b.is_meta:
                    mod._buffers[k] = torch.zeros(b.shape, dtype=b.dtype)


def _order(pm) -> list[tuple[str, int, int]]:
    """``(kind, chunk position on this rank, micro-batch)`` in the schedule's order."""
    plan, stage = pm.plan, pm.ctx.stage
    m = plan.num_microbatches
    if plan.pp == 1:
        return [a for i in range(m) for a in (("F", 0, i), ("B", 0, i))]
    if len(pm.chunks) == 1 and plan.schedule.value == "gpipe":
        return [("F", 0, i) for i in range(m)] + [("B", 0, i) for i in range(m)]
    if len(pm.chunks) == 1:  # 1F1B
        warm = min(m, plan.pp - stage)
        out = [("F", 0, i) for i in range(warm)]
        f, b = warm, 0
        while b < m:
            out.append(("B", 0, b))
            b += 1
            if f < m:
                out.append(("F", 0, f))
                f += 1
        return out
    chunk_ids = [c for c in range(len(plan.stage_layers)) if c % plan.pp == stage]
    out = []
    for a in pm.pipeline.schedule.pipeline_order[stage]:
        if a is None:
            continue
        kind = getattr(a.computation_type, "value", str(a.computation_type))
        if kind in ("F", "B"):
            out.append((kind, chunk_ids.index(a.stage_index), a.microbatch_index))
    return out


def _fake_step(pm, ids_mbs, label_mbs, count: int, hidden: int, dtype) -> None:
    """One training step of this rank's chunks on fake micro-batches (see the module doc)."""
    from galvatron.parallel.redistribute import boundary_layout

    plan, ctx = pm.plan, pm.ctx
    lay = boundary_layout(ctx.stage_size, plan.micro_batch_size)
    b0, b1, s0, s1, _ = lay.block(ctx.local_rank, plan.micro_batch_size, ctx.seq_len)
    live: dict[tuple[int, int], tuple[Any, Any]] = {}
    pm.optimizer.zero_grad()
    with pm._autocast():
        for kind, pos, i in _order(pm):
            chunk = pm.chunks[pos]
            if kind == "F":
                x = ids_mbs[i] if chunk.embed is not None else torch.empty(
                    (b1 - b0, s1 - s0, hidden), dtype=dtype, requires_grad=True)
                out = chunk(x)
                if chunk.head is not None:
                    out = pm.loss_sum(out, label_mbs[i]) / count
                live[(pos, i)] = (x, out)
                continue
            _, out = live.pop((pos, i))
            if out.dim() == 0:
                out.backward()
            else:
                torch.autograd.backward(out, grad_tensors=torch.empty_like(out))
    pm.finish_grads()
    pm.optimizer.step()


def _fake_rank(q, plan: Plan, model_name: str, seq_len: int, overrides: dict[str, Any], rank: int) -> None:
    try:
        import torch.distributed as dist
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.testing._internal.distributed.fake_pg import FakeStore

        from galvatron import models, parallel
        from galvatron.parallel import instrument as I

        torch.set_num_threads(1)
        dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=plan.world_size)
        model = models.build(model_name, seed=0, device="meta", **overrides)
        if plan.pp > 1 and (model.memory_inputs is not None or model.input_names[0] != "input_ids"):
            raise ValueError(f"--fake with pp > 1: {model_name} is not a decoder-only token model "
                             "(the emulated pipeline boundary carries one hidden stream)")
        mode = FakeTensorMode(allow_non_fake_inputs=True)
        _materialise(model, mode)
        pm = parallel.build(model, plan, seed=0, seq_len=seq_len)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, model.config.vocab_size, (plan.global_batch_size, seq_len), generator=g)
        labels = torch.nn.functional.pad(ids, (0, 1), value=-100)[..., 1:] if pm.shift_labels else ids
        count = int((labels != -100).sum())
        hidden = model.config.hidden_size
        dtype = next(iter(model.parameters())).dtype
        with mode:
            ids_mbs = [mode.from_tensor(t) for t in ids.chunk(plan.num_microbatches)]
            label_mbs = [mode.from_tensor(t) for t in labels.chunk(plan.num_microbatches)]
            _fake_step(pm, ids_mbs, label_mbs, count, hidden, dtype)
            tracker = I.live_tensor_tracker()
            shared = [u.module for u in pm.units if u.replicated]
            tracker.track_model(*pm.chunks, *shared, optimizers=pm.optimizer.optimizers)
            with tracker:
                _fake_step(pm, ids_mbs, label_mbs, count, hidden, dtype)
            peak = tracker.peak_by_kind()
        q.put(("ok", {"rank": rank, "stage": pm.ctx.stage, "memory_bytes": peak}))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        q.put(("error", f"{type(e).__name__}: {e}" if isinstance(e, ValueError) else traceback.format_exc()))


def rank_roles(plan: Plan) -> list[int]:
    """The ranks measured: the first and the last rank of every pipeline stage (the ceil-shard
    remainders of tensor, sequence and data parallelism fall on the last ones)."""
    n = plan.devices_per_stage
    return sorted({r for s in range(plan.pp) for r in (s * n, s * n + n - 1)})


def measure_fake(plan: Plan, model_name: str, seq_len: int, overrides: dict[str, Any] | None = None,
                 ranks: list[int] | None = None, timeout_s: float = 900.0, parallel_procs: int = 2) -> list[dict]:
    """Peak live tensor bytes by kind of each rank in ``ranks`` (default :func:`rank_roles`),
    each in a forked process; raises ValueError naming a rank that fails."""
    ctx = mp.get_context("fork")
    todo = list(ranks if ranks is not None else rank_roles(plan))
    results: list[dict] = []
    while todo:
        batch, todo = todo[:parallel_procs], todo[parallel_procs:]
        running = []
        for r in batch:
            q = ctx.Queue()
            p = ctx.Process(target=_fake_rank, args=(q, plan, model_name, seq_len, dict(overrides or {}), r))
            p.start()
            running.append((r, p, q))
        for r, p, q in running:
            try:
                status, out = q.get(timeout=timeout_s)
            except Exception:  # noqa: BLE001 - queue.Empty or a dead child
                p.kill()
                raise ValueError(f"--fake: rank {r} did not finish within {timeout_s:.0f} s") from None
            p.join(timeout=30)
            if status != "ok":
                raise ValueError(f"--fake: rank {r} failed: {out}")
            results.append(out)
    return sorted(results, key=lambda x: x["rank"])
