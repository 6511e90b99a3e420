"""Which parts of the model a rank holds under a plan, and loading only those from a Hugging
Face checkpoint.

A rank of pipeline stage ``rank // plan.devices_per_stage`` holds the chunks ``c`` with
``c % pp == stage`` (several with interleaving): their layers, the embedding with chunk 0 and
the head with the last chunk -- exactly what :func:`galvatron.parallel.build` keeps there.
:func:`load_hf_checkpoint_for_rank` materialises only those parts (the rest stays on the
``meta`` device) and reads only their tensors (of a sharded checkpoint, only the shards holding
them); ``build`` accepts such a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from galvatron.plan import Plan


@dataclass(frozen=True)
class RankParts:
    layer_indices: tuple[int, ...]
    embedding: bool
    head: bool


def rank_parts(plan: Plan, rank: int) -> RankParts:
    """The layers (global indices), embedding and head that ``rank`` holds under ``plan``."""
    if not 0 <= rank < plan.world_size:
        raise ValueError(f"rank {rank} out of range; the plan has world_size={plan.world_size}")
    stage = rank // plan.devices_per_stage
    num_chunks = len(plan.stage_layers)
    starts = [sum(plan.stage_layers[:c]) for c in range(num_chunks)]
    mine = [c for c in range(num_chunks) if c % plan.pp == stage]
    layers = tuple(i for c in mine for i in range(starts[c], starts[c] + plan.stage_layers[c]))
    return RankParts(layers, 0 in mine, num_chunks - 1 in mine)


def load_hf_checkpoint_for_rank(path: str | os.PathLike[str], plan: Plan, rank: int | None = None,
                                device: str | torch.device = "cpu"):
    """This rank's parts of the model in the HF checkpoint directory ``path`` (see module
    docstring). ``rank`` defaults to this process's rank in torch.distributed."""
    from galvatron import models

    if rank is None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise ValueError("rank: required when torch.distributed is not initialised")
        rank = dist.get_rank()
    parts = rank_parts(plan, rank)
    model = models.load_hf_checkpoint(path, layer_indices=parts.layer_indices,
                                      include_embedding=parts.embedding,
                                      include_head=parts.head, device=device)
    if len(model.layers) != plan.num_layers:
        raise ValueError(f"{os.fspath(path)}: the checkpoint has {len(model.layers)} layers; the "
                         f"plan has {plan.num_layers}")
    return model.train()
