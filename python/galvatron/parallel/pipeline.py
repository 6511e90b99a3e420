"""Micro-batches and pipeline schedules (``torch.distributed.pipelining``).

``pp == 1``: a plain loop (forward, loss, backward per micro-batch; gradients accumulate).
``pp > 1``: one ``PipelineStage`` per chunk of this rank on the pipeline group (ranks with
the same local index in every stage), ``ScheduleGPipe`` / ``Schedule1F1B`` /
``ScheduleInterleaved1F1B`` with ``scale_grads=False`` (our loss is already divided by the
global token count). Stage inputs/outputs are the boundary-layout blocks of the hidden states,
so each rank sends ``1/N`` of a micro-batch's activations to its peer in the next stage.
"""

from __future__ import annotations

import torch
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from galvatron.parallel.instrument import region
from galvatron.plan import Schedule


def run_microbatches(pm, inputs, labels, count: int, train: bool = True) -> float:
    """Forward (+ backward when `train`) of every micro-batch; returns this rank's local loss
    sum / count. ``inputs``: the first chunk's arguments for the global batch (ids first)."""
    plan = pm.plan
    m = plan.num_microbatches
    if plan.pp == 1:
        chunk = pm.chunks[0]
        total = 0.0
        parts = [t.chunk(m) for t in inputs]
        for i, lab_mb in enumerate(labels.chunk(m)):
            with region("forward"):
                loss = pm.loss_sum(chunk(*(p[i] for p in parts)), lab_mb) / count
            if train:
                with region("backward"):
                    loss.backward()
            total += float(loss.detach())
        return total
    losses: list[torch.Tensor] = []
    first = pm.chunks[0].embed is not None
    last = pm.chunks[-1].head is not None
    pm._count = count
    kwargs = {}
    if last:
        kwargs.update(target=labels, losses=losses)
    if train:  # the step's outputs are not used: torch would keep every micro-batch's logits
        kwargs["return_outputs"] = False
    run = pm.schedule.step if train else pm.schedule.eval
    with region("pipeline"):  # p2p and bubble: what the stages' forward/backward do not claim
        if first:
            run(*inputs, **kwargs)
        else:
            run(**kwargs)
    return float(sum(float(x.detach()) for x in losses))


def build_schedule(pm, pp_group):
    plan = pm.plan
    num_stages = len(plan.stage_layers)
    chunk_ids = [c for c in range(num_stages) if c % plan.pp == pm.ctx.stage]
    stages = [_TimedStage(ch, c, num_stages, pm.ctx.device, group=pp_group)
              for ch, c in zip(pm.chunks, chunk_ids, strict=True)]

    def loss_fn(logits, target):
        return pm.loss_sum(logits, target) / pm._count

    m = plan.num_microbatches
    if plan.schedule is Schedule.INTERLEAVED_1F1B:
        return ScheduleInterleaved1F1B(stages, m, loss_fn=loss_fn, scale_grads=False)
    cls = ScheduleGPipe if plan.schedule is Schedule.GPIPE else Schedule1F1B
    return cls(stages[0], m, loss_fn=loss_fn, scale_grads=False)


class _TimedStage(PipelineStage):
    """A ``PipelineStage`` whose forward and backward of a micro-batch are instrumentation
    regions (:mod:`galvatron.parallel.instrument`; no-ops unless recording)."""

    def forward_one_chunk(self, *args, **kwargs):
        with region("forward"):
            return super().forward_one_chunk(*args, **kwargs)

    def backward_one_chunk(self, *args, **kwargs):
        with region("backward"):
            return super().backward_one_chunk(*args, **kwargs)
