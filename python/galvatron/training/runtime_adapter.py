"""What the training loop needs about its model and from the hybrid-parallel runtime
(:mod:`galvatron.parallel`), as functions of typed values: the job's model resolved once
(:class:`JobModel`), its batches and FLOPs, predicted memory, this rank's checkpoint state and
the Hugging Face export. :class:`galvatron.training.trainer.Trainer` holds one rank's state.

Checkpoint state: every rank saves its own parameter and optimizer shards under keys that start
with ``rank{r}/`` (DTensors as their local shards), and rank 0 records in ``train_state.json``
which piece of which logical tensor every key holds. Loading reads, on each rank, the saved
pieces its own part needs: the same plan restores every bit of state from the rank's own keys;
another plan or world size (resharding) reassembles the pieces (values copied exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from galvatron.plan import Plan

if TYPE_CHECKING:
    from galvatron.parallel import ParallelModel
    from galvatron.training.config import TrainConfig
    from galvatron.training.data import TokenData


@dataclass(frozen=True)
class JobModel:
    """The model of one job, resolved once (``resolve_model``) and passed along: its name, the
    job's overrides, its config and spec, the tokens entering its first layer (the configured
    length for text, the patch count for images) and whether it is an encoder-decoder (T5: the
    batch's labels continue its input_ids, see ``TokenData.batch``)."""

    name: str
    overrides: dict[str, Any]
    config: Any
    spec: Any
    seq_len: int
    encoder_decoder: bool


def resolve_model(cfg: TrainConfig, overrides: dict[str, Any]) -> JobModel:
    from galvatron import models

    config = models.get_config(cfg.model.name, **overrides)
    spec = models.spec(config)
    seq_len = spec.seq_len if cfg.data.kind == "images" else cfg.model.seq_len
    family = models.FAMILIES[config.family]
    return JobModel(cfg.model.name, dict(overrides), config, spec, seq_len,
                    family.model_cls.memory_inputs is not None)


def model_flops_per_step(jm: JobModel, global_batch: int) -> float:
    """Model FLOPs of one optimizer step: forward + backward (2x forward) of the whole model on
    the global batch, from the model spec; recomputation (activation checkpointing) excluded."""
    return 3.0 * jm.spec.flops_fwd(global_batch, jm.seq_len)


def batch(cfg: TrainConfig, jm: JobModel, data: TokenData | None, step: int,
          global_batch: int) -> dict[str, torch.Tensor]:
    """The global batch of ``step``: a pure function of ``(seed, step)``."""
    if data is None:  # synthetic images for ViT / Swin
        from galvatron.training.data import image_batch

        mc = jm.config
        arrays = image_batch(step, global_batch, mc.image_size, mc.num_channels, mc.num_labels, cfg.seed)
    else:
        arrays = data.batch(step, global_batch, cfg.model.seq_len, cfg.seed, continuation=jm.encoder_decoder)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def predicted_peaks(plan: Plan, world: int) -> list[int] | None:
    """Predicted peak live tensor bytes of every rank (parameters, gradients, optimizer
    states, activations, transient of its pipeline stage; the profile's buffer and framework
    overhead terms are not tensors), or None when the plan carries no prediction."""
    from galvatron.check.report import predicted_tensor_bytes

    stages = (plan.predicted or {}).get("stage_memory")
    if not stages:
        return None
    stage_size = world // plan.pp
    return [predicted_tensor_bytes(stages[r // stage_size]) for r in range(world)]


def checkpoint_state(pm: ParallelModel) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Collective. This rank's tensors to save (parameters and optimizer state under keys that
    start with ``rank{r}/``) and, on rank 0, the layout of every rank's tensors (JSON: which
    piece of which logical tensor each holds; see :mod:`galvatron.parallel.state`) that lets a
    run under another plan or world size load them."""
    from galvatron.parallel.state import local_state

    entries = local_state(pm)
    mine = {entry.key: [s.to_list() for s in entry.segments] for entry in entries}
    every = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, every, dst=0)
    layout = None
    if every is not None:
        layout = {"version": 1, "shapes": {k: list(v) for k, v in pm.full_shapes.items()},
                  "keys": {k: v for rank_keys in every for k, v in rank_keys.items()}}
    return {entry.key: entry.tensor.detach() for entry in entries}, layout


def load_state(pm: ParallelModel, path: str, train_state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
    """Collective: restore parameters and optimizer state saved by :func:`checkpoint_state`
    under any plan and world size (resharding: each rank reads the saved pieces it needs).
    The layout in ``train_state`` and the checkpoint's tensor index are validated against this
    model (names, shapes, dtypes, ranges) before any tensor data is read."""
    from galvatron.parallel.state import restore, validate_layout
    from galvatron.training.checkpoint import CheckpointManager

    if tensors is None:
        tensors = CheckpointManager.inspect(path)[1]
    keys, shapes = validate_layout(train_state.get("layout"), tensors, pm.full_shapes,
                                   f"{path}/train_state.json")

    def read(wanted: list[str]) -> dict[str, torch.Tensor]:
        from galvatron.training.checkpoint import DTYPES

        bufs = {k: torch.empty(tuple(tensors[k]["shape"]), dtype=DTYPES[tensors[k]["dtype"]]) for k in wanted}
        CheckpointManager.load(path, bufs, tensors)
        return bufs

    restore(pm, keys, shapes, read)


def export_hf(pm: ParallelModel, cfg: TrainConfig, jm: JobModel, out_dir: str) -> None:
    """Collective: gathers the full weights on rank 0 and writes a Hugging Face directory
    (config + safetensors, :func:`galvatron.models.save_hf_checkpoint`) there. Needs the ``hf``
    extra (transformers, safetensors)."""
    from galvatron import models

    parts = pm.local_parameters()  # collective (ZeRO-2/3 shards are gathered)
    gathered = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object([(n, t.cpu(), src) for n, t, src in parts], gathered, dst=0)
    if dist.get_rank() != 0:
        return
    full: dict[str, torch.Tensor] = {}
    pieces: dict[str, list] = {}
    for rank_parts in gathered:
        for name, t, src in rank_parts:
            pieces.setdefault(name, []).append((t, src))
    model = models.build(jm.name, seed=cfg.seed, **jm.overrides)
    target = model.state_dict()
    for name, items in pieces.items():
        if name not in target:
            continue
        if items[0][1] is None:
            full[name] = items[0][0]
            continue
        dim = items[0][1][0]
        out = torch.empty_like(target[name])
        for t, (d, start, length) in items:
            out.narrow(d, start, min(length, out.shape[d] - start)).copy_(t.narrow(dim, 0, min(length, out.shape[d] - start)))
        full[name] = out
    aliases = {alias for _, alias in model.tied_parameters()}
    missing = [k for k in target if k not in full and k not in aliases]
    model.load_state_dict({**target, **full})
    try:  # the HF layout (sharded past 5 GiB) without building a transformers model
        models.save_hf_checkpoint(model, out_dir)
    except ModuleNotFoundError:
        raise ValueError("checkpoint.export_hf needs the hf extra: pip install 'galvatron[hf]'") from None
    if missing:
        print(f"note: {len(missing)} tensors kept their initial values in the export: {missing[:5]}", flush=True)
