"""Compose the techniques of a plan on this rank's part of a model: :func:`build`.

Every technique lives in its own module and is applied here, in this order:

1. groups and geometry of the rank (:mod:`.builder`, :mod:`.mesh`);
2. per layer: tensor parallelism (Megatron TP / SP, :mod:`.tensor_parallel`), Ulysses
   (:mod:`.ulysses`), activation checkpointing (:class:`.units.LayerIO`); the embedding and head
   vocabulary-parallel over the embedding strategy's tp;
3. the chunks of this rank, moving activations between layouts (:mod:`.chunk`,
   :mod:`.redistribute`); tied embedding/head merged into one unit where sharded (:mod:`.tied`);
4. data parallelism per unit: DDP, ZeRO-1, FSDP2 ZeRO-2/3, and the optimizers
   (:mod:`.data_parallel`);
5. the pipeline schedule (:mod:`.pipeline`).

Gradient finishing and clipping after the micro-batches: :mod:`.gradients`; one step:
:class:`.model.ParallelModel`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from galvatron.models.base import GalvatronModel
from galvatron.parallel import tensor_parallel
from galvatron.parallel.builder import RankBuilder
from galvatron.parallel.chunk import Chunk
from galvatron.parallel.data_parallel import Optimizers, apply_data_parallel
from galvatron.parallel.mesh import validate
from galvatron.parallel.model import ParallelModel
from galvatron.parallel.pipeline import Pipeline
from galvatron.parallel.redistribute import boundary_layout
from galvatron.parallel.tied import merge_tied
from galvatron.parallel.ulysses import apply_ulysses
from galvatron.parallel.units import Unit
from galvatron.plan import Plan, SpKind


def build(model: str | GalvatronModel, plan: Plan, *, seed: int = 0, seq_len: int | None = None,
          decoder_seq_len: int | None = None,
          lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
          max_grad_norm: float | None = None, timeout_s: float = 60.0,
          device: str | torch.device | None = None) -> ParallelModel:
    """Build this rank's part of ``model`` under ``plan`` (see :mod:`galvatron.parallel`)."""
    from galvatron import models

    if isinstance(model, str):
        model = models.build(model, seed=seed)
    if not dist.is_initialized():
        raise ValueError("torch.distributed is not initialised; call init_process_group first")
    plan.validate(world_size=dist.get_world_size())
    seq_len = seq_len or getattr(model.config, "max_seq_len", None)
    if seq_len is None:
        raise ValueError("seq_len: required for models without max_seq_len")
    validate(plan, model, seq_len, decoder_seq_len)
    builder = RankBuilder(model, plan, (seq_len, decoder_seq_len or seq_len), timeout_s, device)
    units, chunks = _build_chunks(builder)
    adam_params, shards = apply_data_parallel(units, plan, builder.ctx.device)
    builder.originals.clear()
    optimizer = Optimizers(adam_params, shards, [u.ddp for u in units if u.ddp],
                           lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    pm = ParallelModel(plan, builder.ctx, chunks, units, optimizer,
                       bool(getattr(model, "shift_labels", False)), max_grad_norm=max_grad_norm,
                       input_key=builder.input_key, token_loss=builder.vocab is not None,
                       loss_fn=model.loss, memory_inputs=model.memory_inputs,
                       memory_ids=model.memory_ids, full_shapes=builder.full_shapes)
    pm.ties = builder.tied_pairs(units)
    if plan.pp > 1:
        pm.pipeline = Pipeline(plan, chunks, builder.ctx.stage, builder.ctx.device,
                               builder.pp_group, pm.loss_sum)
    return pm


def _build_chunks(builder: RankBuilder) -> tuple[list[Unit], list[Chunk]]:
    """This rank's chunks and every unit they hold (shared parameters first)."""
    plan = builder.plan
    units, chunks = builder.shared_units(), []
    boundary = boundary_layout(builder.stage_size, plan.micro_batch_size)
    for c in builder.my_chunks:
        embed = builder.embed_unit() if c == 0 else None
        layers = [_parallelize_layer(builder, i) for i in builder.layer_range(c)]
        head = builder.head_unit() if c == builder.num_chunks - 1 else None
        if builder.sharded_tie:  # one FSDP2 unit over embedding and head: the tied tensor once
            embed, head, pair = merge_tied(embed, head)
            units += [pair] + layers
        else:
            units += ([embed] if embed else []) + layers + ([head] if head else [])
        in_layout = None if c == 0 else boundary
        out_layout = None if c == builder.num_chunks - 1 else boundary
        chunks.append(Chunk(builder.ctx, embed, layers, head, in_layout, out_layout))
    shared = [u.module for u in units if u.replicated]
    if shared:  # registered once, so chunk parameters (checkpoints) cover everything held
        chunks[0].shared = nn.ModuleList(shared)
    return units, chunks


def _parallelize_layer(builder: RankBuilder, i: int) -> Unit:
    """Tensor parallelism (with Megatron-SP) and Ulysses on layer ``i``, then its unit."""
    s = builder.plan.layers[i]
    coord = builder.coord(s)
    tp_group, sp_group, _ = builder.groups_of(s)
    layer = builder.model.layers[i]
    tensor_parallel.apply_tp(layer, s.tp, coord.t, tp_group, s.sp_kind is SpKind.MEGATRON)
    apply_ulysses(layer, s.sp, coord.j, sp_group)
    return builder.layer_unit(i)
