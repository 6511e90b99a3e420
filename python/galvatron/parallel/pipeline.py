"""Micro-batches and pipeline schedules (``torch.distributed.pipelining``).

``pp == 1``: a plain loop (forward, loss, backward per micro-batch; gradients accumulate).
``pp > 1``: one ``PipelineStage`` per chunk of this rank on the pipeline group (ranks with
the same local index in every stage), ``ScheduleGPipe`` / ``Schedule1F1B`` /
``ScheduleInterleaved1F1B`` with ``scale_grads=False`` (our loss is already divided by the
global token count). Stage inputs/outputs are the boundary-layout blocks of the hidden states,
so each rank sends ``1/N`` of a micro-batch's activations to its peer in the next stage.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
)

from galvatron.parallel.instrument import region
from galvatron.plan import Plan, Schedule

LossSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, labels) -> loss sum


def run_local(chunk, loss_sum: LossSum, inputs, labels, count: int, num_microbatches: int,
              train: bool = True) -> float:
    """``pp == 1``: forward (+ backward when `train`) of every micro-batch through the one
    ``chunk``; returns this rank's local loss sum / count. ``inputs``: the chunk's arguments
    for the global batch (ids first)."""
    total = 0.0
    parts = [t.chunk(num_microbatches) for t in inputs]
    for i, labels_mb in enumerate(labels.chunk(num_microbatches)):
        with region("forward"):
            loss = loss_sum(chunk(*(p[i] for p in parts)), labels_mb) / count
        if train:
            with region("backward"):
                loss.backward()
        total += float(loss.detach())
    return total


class Pipeline:
    """``pp > 1``: this rank's chunks as ``PipelineStage`` s and the plan's schedule over them.
    ``loss_sum`` gives a micro-batch's loss sum on the last stage; each step divides it by
    the step's global label count (given to :meth:`run`)."""

    def __init__(self, plan: Plan, chunks: list, stage: int, device, pp_group,
                 loss_sum: LossSum) -> None:
        num_chunks = len(plan.stage_layers)
        chunk_ids = [c for c in range(num_chunks) if c % plan.pp == stage]
        stages = [_TimedStage(ch, c, num_chunks, device, group=pp_group)
                  for ch, c in zip(chunks, chunk_ids, strict=True)]
        self.first = chunks[0].embed is not None
        self.last = chunks[-1].head is not None
        self._loss_sum = loss_sum
        self._count = 1  # global label-token (or sample) count of the current step
        m = plan.num_microbatches
        if plan.schedule is Schedule.INTERLEAVED_1F1B:
            self.schedule = ScheduleInterleaved1F1B(stages, m, loss_fn=self._loss, scale_grads=False)
        else:
            cls = ScheduleGPipe if plan.schedule is Schedule.GPIPE else Schedule1F1B
            self.schedule = cls(stages[0], m, loss_fn=self._loss, scale_grads=False)

    def _loss(self, logits, target):
        return self._loss_sum(logits, target) / self._count

    def run(self, inputs, labels, count: int, train: bool = True) -> float:
        """Forward (+ backward when `train`) of every micro-batch; returns this rank's local
        loss sum / count (0 off the last stage). ``inputs``: the first chunk's arguments for
        the global batch (ids first)."""
        losses: list[torch.Tensor] = []
        self._count = count
        kwargs = {}
        if self.last:
            kwargs.update(target=labels, losses=losses)
        if train:  # the step's outputs are not used: torch would keep every micro-batch's logits
            kwargs["return_outputs"] = False
        run = self.schedule.step if train else self.schedule.eval
        with region("pipeline"):  # p2p and bubble: what the stages' forward/backward do not claim
            if self.first:
                run(*inputs, **kwargs)
            else:
                run(**kwargs)
        return float(sum(float(x.detach()) for x in losses))

    @property
    def backward_ready(self) -> bool:
        """Whether torch's schedule has its backward set up (its first training step, and the
        first after an evaluation, set it up with ``autograd.grad``)."""
        for name in ("_stage_backward_initialized", "_stages_backward_initialized"):  # torch's flags
            if hasattr(self.schedule, name):
                return bool(getattr(self.schedule, name))
        return False


class _TimedStage(PipelineStage):
    """A ``PipelineStage`` whose forward and backward of a micro-batch are instrumentation
    regions (:mod:`galvatron.parallel.instrument`; no-ops unless recording)."""

    def forward_one_chunk(self, *args, **kwargs):
        with region("forward"):
            return super().forward_one_chunk(*args, **kwargs)

    def backward_one_chunk(self, *args, **kwargs):
        with region("backward"):
            return super().backward_one_chunk(*args, **kwargs)
