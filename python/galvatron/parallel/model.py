"""This rank's part of a model under a plan (:class:`ParallelModel`, made by
:func:`galvatron.parallel.build`): one training or evaluation step on the global batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from galvatron.parallel import gradients, tensor_parallel
from galvatron.parallel.chunk import Chunk, StageContext
from galvatron.parallel.data_parallel import Optimizers
from galvatron.parallel.instrument import region
from galvatron.parallel.mesh import coords
from galvatron.parallel.pipeline import Pipeline, run_local
from galvatron.parallel.redistribute import embedding_layout
from galvatron.parallel.units import ParamMeta, Unit
from galvatron.plan import Plan, Precision


@dataclass
class ParallelModel:
    """This rank's part of the model (returned by :func:`galvatron.parallel.build`)."""

    plan: Plan
    ctx: StageContext
    chunks: list[Chunk]
    units: list[Unit]
    optimizer: Optimizers
    shift_labels: bool
    ties: list[gradients.TiedPair] = field(default_factory=list)
    pipeline: Pipeline | None = None  # pp > 1: this rank's stages and their schedule
    max_grad_norm: float | None = None
    input_key: str = "input_ids"
    memory_inputs: tuple[str, str] | None = None  # encoder-decoder: second-stream input names
    memory_ids: object = None  # batch -> second-stream ids (the model's, e.g. shifted labels)
    token_loss: bool = True  # vocabulary head: per-token loss; else per-sample (model.loss)
    loss_fn: object = None
    last_grad_norm: float | None = None  # global gradient norm of the last step (before clipping)
    full_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # single-process shapes

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step on the *global* batch (identical on every rank; each rank
        slices its part). Returns the global mean token loss (the same on every rank)."""
        with region("other"):  # instrumentation: what no inner region claims
            inputs, labels, count = self._inputs(batch)
            self.optimizer.zero_grad()
            with self._autocast():
                local = self._run_microbatches(inputs, labels, count, train=True)
            self.finish_grads()
            with region("optimizer"):
                if self.max_grad_norm is not None:
                    self.last_grad_norm = self.clip_grad_norm(self.max_grad_norm)
                self.optimizer.step()
            return self._global_loss(local)

    def eval_step(self, batch: dict[str, torch.Tensor]) -> float:
        """The global mean loss of `batch` (forward only: no gradients, no optimizer step)."""
        inputs, labels, count = self._inputs(batch)
        # Pipeline schedules run their own forward-only path (and refuse no_grad around it).
        grad = torch.enable_grad() if self.plan.pp > 1 else torch.no_grad()
        with self._autocast(), grad:
            local = self._run_microbatches(inputs, labels, count, train=False)
        return self._global_loss(local)

    def _run_microbatches(self, inputs, labels, count: int, train: bool) -> float:
        if self.pipeline is not None:
            return self.pipeline.run(inputs, labels, count, train)
        return run_local(self.chunks[0], self.loss_sum, inputs, labels, count,
                                  self.plan.num_microbatches, train)

    def _inputs(self, batch: dict[str, torch.Tensor]):
        """``(chunk inputs of the global batch, labels, global label count)``; the inputs are
        ``(ids[, mask])``, or ``(ids, mask, memory ids, memory mask)`` for encoder-decoder
        models (absent masks as ``[batch, 0]``)."""
        plan, ctx = self.plan, self.ctx
        batch = {k: v.to(ctx.device) for k, v in batch.items()}
        ids = batch[self.input_key]
        if self.memory_inputs is not None and "labels" not in batch:
            raise ValueError("labels: required for encoder-decoder models (the decoder targets)")
        labels = batch.get("labels", ids)
        if self.shift_labels:
            labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
        want = (plan.global_batch_size, ctx.seq_len) if self.token_loss else (plan.global_batch_size,)
        if tuple(ids.shape[:len(want)]) != want:
            raise ValueError(f"{self.input_key}: expected shape {want} (+ trailing dims), "
                             f"got {tuple(ids.shape)}")
        # token losses: mean over label tokens; sample losses (classification): over samples
        count = int((labels != -100).sum()) if self.token_loss else labels.shape[0]
        mask = batch.get("attention_mask")
        if self.memory_inputs is None:
            return (ids,) if mask is None else (ids, mask), labels, count
        mem_key, mem_mask_key = self.memory_inputs
        mem = self.memory_ids(batch)  # given, or derived from the labels by the model
        dec_want = (plan.global_batch_size, ctx.decoder_seq_len)
        for name, t in ((mem_key, mem), ("labels", labels)):
            if tuple(t.shape) != dec_want:
                raise ValueError(f"{name}: expected shape {dec_want} (decoder_seq_len="
                                 f"{ctx.decoder_seq_len} of build), got {tuple(t.shape)}")
        empty = ids.new_empty((ids.shape[0], 0))
        mem_mask = batch.get(mem_mask_key)
        return ((ids, empty if mask is None else mask, mem,
                 empty if mem_mask is None else mem_mask), labels, count)

    def _global_loss(self, local: float) -> float:
        """Sum of the local losses of one replica of the head (tp rank 0 of each head block)."""
        ctx = self.ctx
        is_head_rank = self.chunks[-1].head is not None
        primary = is_head_rank and coords(self.plan.embedding, ctx.stage_size, ctx.local_rank).t == 0
        t = torch.tensor([local if primary else 0.0], dtype=torch.float64, device=ctx.device)
        dist.all_reduce(t)
        return float(t.item())

    def _autocast(self):
        kind = self.ctx.device.type
        if self.plan.precision is Precision.FP32:
            return torch.autocast(kind, enabled=False)
        dtype = torch.bfloat16 if self.plan.precision is Precision.BF16 else torch.float16
        return torch.autocast(kind, dtype=dtype)

    def loss_sum(self, logits, labels_mb) -> torch.Tensor:
        """Sum of token (or sample) losses of this rank's head block of one micro-batch."""
        layout = embedding_layout(self.plan.embedding, self.ctx.stage_size)
        seq = labels_mb.shape[1] if labels_mb.dim() > 1 else self.ctx.seq_len  # T5: decoder
        row0, row1, col0, col1, _ = layout.block(self.ctx.local_rank, self.plan.micro_batch_size, seq)
        if not self.token_loss:  # the model's mean loss over its samples, times their number
            return self.loss_fn(logits, {"labels": labels_mb[row0:row1]}) * (row1 - row0)
        head_module = self.chunks[-1].head_unit.module
        head_module = getattr(head_module, "owner", head_module)
        vocab_head = _find(head_module, tensor_parallel.VocabHead)
        return tensor_parallel.vocab_parallel_loss_sum(logits, labels_mb[row0:row1, col0:col1], vocab_head)

    # ------------------------------------------------------------------ gradients
    def finish_grads(self) -> None:
        """After the last micro-batch (see :func:`galvatron.parallel.gradients.finish_grads`)."""
        gradients.finish_grads(self.units, self.ties)

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip by the global gradient norm over every mesh; returns the norm before clipping."""
        return gradients.clip_grad_norm(self.units, max_norm, self.ctx.device)

    # ------------------------------------------------------------------ inspection
    def local_parameters(self):
        """``(full_name, tensor, src)`` for every local parameter: ``tensor`` is this rank's
        tp slice (ZeRO-2/3 shards gathered over the weight group; a collective, call it on
        every rank), ``src = (dim, start, length)`` or None."""
        out = []
        for p, m in self.unique_params():
            t = p.full_tensor() if hasattr(p, "full_tensor") else p
            out.append((m.name, t.detach(), m.src))
        return out

    def unique_params(self) -> list[tuple[nn.Parameter, ParamMeta]]:
        """``(parameter, metadata)`` of every parameter of this rank's units, each once."""
        out, seen = [], set()
        for u in self.units:
            for p, m in zip(u.params(), u.meta, strict=True):
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((p, m))
        return out


def _find(module: nn.Module, cls: type) -> nn.Module:
    for m in module.modules():
        if isinstance(m, cls):
            return m
    raise AssertionError(f"no {cls.__name__} in {type(module).__name__}")
