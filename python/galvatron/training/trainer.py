"""One rank's training state, typed: :class:`Trainer` holds this rank's part of the model
(:class:`galvatron.parallel.ParallelModel`), the job's configuration, its model resolved once
(:class:`~galvatron.training.runtime_adapter.JobModel`) and its data, and does what the
training loop asks of them: the learning rate, a batch, a step (with the CPU memory tracking of
the first steps), evaluation, checkpoint state and the Hugging Face export."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from galvatron.parallel import ParallelModel
from galvatron.plan import Plan
from galvatron.training import runtime_adapter
from galvatron.training.config import TrainConfig
from galvatron.training.data import TokenData

MEMORY_TRACKED_STEPS = 2  # on CPU, steps of a process run under the live-tensor tracker


@dataclass
class Trainer:
    pm: ParallelModel
    cfg: TrainConfig
    model: runtime_adapter.JobModel
    data: TokenData | None  # None: synthetic images (ViT, Swin)
    steps_tracked: int = 0  # steps run under the memory tracker (CPU)
    live_peak_bytes: int = -1  # their peak live tensor bytes; -1 before the first

    @classmethod
    def build(cls, cfg: TrainConfig, model: runtime_adapter.JobModel, plan: Plan, data: TokenData | None) -> Trainer:
        """Builds this rank's part of the job's model under ``plan`` (collective)."""
        from galvatron import models, parallel

        module = models.build(model.name, seed=cfg.seed, **model.overrides)
        pm = parallel.build(module, plan, seed=cfg.seed, seq_len=model.seq_len, lr=cfg.optim.lr,
                            betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
                            weight_decay=cfg.optim.weight_decay,
                            max_grad_norm=cfg.optim.grad_clip or None)
        return cls(pm, cfg, model, data)

    @property
    def device(self) -> torch.device:
        return self.pm.ctx.device

    def set_lr(self, lr: float) -> None:
        for opt in self.pm.optimizer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def batch(self, step: int, global_batch: int) -> dict[str, torch.Tensor]:
        """The global batch of ``step`` (a pure function of the seed and the step)."""
        return runtime_adapter.batch(self.cfg, self.model, self.data, step, global_batch)

    def train_step(self, batch: dict[str, torch.Tensor]) -> tuple[float, float | None]:
        """One step: ``(global mean loss, gradient norm before clipping or None)``. On CPU the
        first :data:`MEMORY_TRACKED_STEPS` steps of the process that can be tracked (for a
        pipeline: not a step that sets up its backward) run under torch's memory tracker
        (slower), which records their peak live tensor bytes."""
        pm = self.pm
        trackable = pm.pipeline is None or pm.pipeline.backward_ready  # see Pipeline.backward_ready
        if self.device.type != "cuda" and self.steps_tracked < MEMORY_TRACKED_STEPS and trackable:
            from galvatron.check.measure import measure_peak_memory

            self.steps_tracked += 1
            losses: list[float] = []
            peak = measure_peak_memory(pm, lambda: batch, step=lambda b: losses.append(pm.train_step(b)))
            self.live_peak_bytes = max(self.live_peak_bytes, 0, int(peak["total"]))
            loss = losses[0]
        else:
            loss = pm.train_step(batch)
        norm = pm.last_grad_norm
        return float(loss), None if norm is None else float(norm)

    def peak_memory(self) -> int:
        """Peak live tensor bytes of this rank: CUDA ``max_memory_allocated``; on CPU the peak
        measured over the tracked steps (see :meth:`train_step`), -1 before the first of them
        (a pipeline's first steps)."""
        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
        return self.live_peak_bytes

    def eval_loss(self, step: int, global_batch: int) -> float:
        """Mean loss over `logging.eval_batches` batches of the evaluation split."""
        cfg, total = self.cfg, 0.0
        for i in range(cfg.logging.eval_batches):
            arrays = self.data.batch(step * 1000 + i, global_batch, cfg.model.seq_len, cfg.seed, split="eval",
                                continuation=self.model.encoder_decoder)
            total += self.pm.eval_step({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        return total / cfg.logging.eval_batches

    def checkpoint_state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        """Collective (see :func:`galvatron.training.runtime_adapter.checkpoint_state`)."""
        return runtime_adapter.checkpoint_state(self.pm)

    def load_state(self, path: str, train_state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
        """Collective (see :func:`galvatron.training.runtime_adapter.load_state`)."""
        runtime_adapter.load_state(self.pm, path, train_state, tensors)

    def export_hf(self, out_dir: str) -> None:
        """Collective: gathers the full weights on rank 0 and writes a Hugging Face directory
        (config + safetensors, :func:`galvatron.models.save_hf_checkpoint`) there. Needs the
        ``hf`` extra (transformers, safetensors)."""
        runtime_adapter.export_hf(self.pm, self.cfg, self.model, out_dir)

