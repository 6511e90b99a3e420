"""What the training loop needs from the hybrid-parallel runtime (:mod:`galvatron.parallel`):
building, the learning rate, one step, memory, and this rank's checkpoint state.

Checkpoint state: every rank saves its own parameter and optimizer shards under keys that start
with ``rank{r}/`` (DTensors as their local shards), and rank 0 records in ``train_state.json``
which piece of which logical tensor every key holds. Loading reads, on each rank, the saved
pieces its own part needs: the same plan restores every bit of state from the rank's own keys;
another plan or world size (resharding) reassembles the pieces (values copied exactly).
"""

from __future__ import annotations

import resource
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from galvatron.plan import Plan


def model_seq_len(cfg, overrides: dict[str, Any]) -> int:
    """Tokens entering the first layer: the configured length for text, the patch count for images."""
    from galvatron import models

    if cfg.data.kind != "images":
        return cfg.model.seq_len
    return models.spec(models.get_config(cfg.model.name, **overrides)).seq_len


def encoder_decoder(cfg) -> bool:
    """T5-like models: the batch's labels are a continuation of input_ids (see TokenData.batch)."""
    from galvatron import models

    family = models.FAMILIES[models.get_config(cfg.model.name).family]
    return family.model_cls.memory_inputs is not None


def build(parallel, cfg, plan: Plan, overrides: dict[str, Any]):
    from galvatron import models

    model = models.build(cfg.model.name, seed=cfg.seed, **overrides)
    pm = parallel.build(model, plan, seed=cfg.seed, seq_len=model_seq_len(cfg, overrides), lr=cfg.optim.lr,
                        betas=(cfg.optim.beta1, cfg.optim.beta2), eps=cfg.optim.eps,
                        weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.grad_clip or None)
    return pm


def model_flops_per_step(cfg, overrides: dict[str, Any], global_batch: int) -> float:
    """Model FLOPs of one optimizer step: forward + backward (2x forward) of the whole model on
    the global batch, from the model spec; recomputation (activation checkpointing) excluded."""
    from galvatron import models

    spec = models.spec(models.get_config(cfg.model.name, **overrides))
    return 3.0 * spec.flops_fwd(global_batch, model_seq_len(cfg, overrides))


def set_lr(pm, lr: float) -> None:
    for opt in pm.optimizer.optimizers:
        for group in opt.param_groups:
            group["lr"] = lr


def batch(cfg, data, step: int, global_batch: int) -> dict[str, torch.Tensor]:
    if data is None:  # synthetic images for ViT / Swin
        from galvatron import models
        from galvatron.training.data import image_batch

        mc = models.get_config(cfg.model.name, **cfg.model.overrides)
        b = image_batch(step, global_batch, mc.image_size, mc.num_channels, mc.num_labels, cfg.seed)
    else:
        b = data.batch(step, global_batch, cfg.model.seq_len, cfg.seed,
                       continuation=encoder_decoder(cfg))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}


def train_step(pm, b: dict[str, torch.Tensor]) -> tuple[float, float | None]:
    loss = pm.train_step(b)
    norm = getattr(pm, "last_grad_norm", None)
    return float(loss), None if norm is None else float(norm)


def peak_memory() -> int:
    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def eval_loss(pm, cfg, data, step: int, global_batch: int) -> float | None:
    """Mean loss over `logging.eval_batches` batches of the evaluation split."""
    total = 0.0
    for i in range(cfg.logging.eval_batches):
        b = data.batch(step * 1000 + i, global_batch, cfg.model.seq_len, cfg.seed, split="eval",
                       continuation=encoder_decoder(cfg))
        total += pm.eval_step({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()})
    return total / cfg.logging.eval_batches


def checkpoint_state(pm) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Collective. This rank's tensors to save (parameters and optimizer state under keys that
    start with ``rank{r}/``) and, on rank 0, the layout of every rank's tensors (JSON: which
    piece of which logical tensor each holds; see :mod:`galvatron.parallel.state`) that lets a
    run under another plan or world size load them."""
    from galvatron.parallel.state import local_state

    entries = local_state(pm)
    mine = {e.key: [s.to_list() for s in e.segments] for e in entries}
    every = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(mine, every, dst=0)
    layout = None
    if every is not None:
        layout = {"version": 1, "shapes": {k: list(v) for k, v in pm.full_shapes.items()},
                  "keys": {k: v for rank_keys in every for k, v in rank_keys.items()}}
    return {e.key: e.tensor.detach() for e in entries}, layout


def load_state(pm, path: str, train_state: dict[str, Any], tensors: dict[str, Any] | None = None) -> None:
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


def export_hf(pm, cfg, overrides: dict[str, Any], out_dir: str) -> None:
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
    model = models.build(cfg.model.name, seed=cfg.seed, **overrides)
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
