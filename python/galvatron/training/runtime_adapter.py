"""What the training loop needs from the hybrid-parallel runtime (:mod:`galvatron.parallel`):
building, the learning rate, one step, memory, and this rank's checkpoint state.

Checkpoint state: every rank saves its own parameter and optimizer shards under keys that start
with ``rank{r}/`` (DTensors as their local shards), so a resumed run with the same plan and world
size restores every bit of state. Resuming under a different plan or world size is refused
with a clear message (resharding is not implemented yet).
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


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _entries(pm) -> list[tuple[str, torch.Tensor]]:
    """(key, local tensor) of everything this rank must save, in a fixed order."""
    r = dist.get_rank()
    out = []
    for c, chunk in enumerate(pm.chunks):
        for name, p in chunk.named_parameters():
            out.append((f"rank{r}/model/{c}/{name}", _local(p.data)))
    for k, opt in enumerate(pm.optimizer.optimizers):
        for i, p in enumerate(opt.param_groups[0]["params"]):
            for name, t in sorted(opt.state.get(p, {}).items()):
                if torch.is_tensor(t):
                    out.append((f"rank{r}/optim{k}/{i}/{name}", _local(t)))
    return out


def checkpoint_state(pm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in _entries(pm)}


def load_state(pm, path: str, train_state: dict[str, Any]) -> None:
    """Restore this rank's shards saved by :func:`checkpoint_state` (same plan and world)."""
    from galvatron.training.checkpoint import CheckpointManager, SafeFileSystemReader

    saved_plan = Plan.from_dict(train_state["plan"]) if "plan" in train_state else None
    if saved_plan is not None and (saved_plan.to_dict() | {"predicted": None}) != (pm.plan.to_dict() | {"predicted": None}):
        raise ValueError(f"{path}: the checkpoint was written under another plan (pp={saved_plan.pp}, "
                         f"world_size={saved_plan.world_size}); resuming under a different plan or world size "
                         "is not supported yet: resume with the run's plan.json")
    meta = SafeFileSystemReader(path).read_metadata()
    r = dist.get_rank()
    mine = {k: v for k, v in meta.state_dict_metadata.items() if k.startswith(f"rank{r}/")}
    buffers = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype) for k, v in mine.items()}
    CheckpointManager.load(path, buffers)
    with torch.no_grad():
        for c, chunk in enumerate(pm.chunks):
            for name, p in chunk.named_parameters():
                _local(p.data).copy_(buffers[f"rank{r}/model/{c}/{name}"])
        for k, opt in enumerate(pm.optimizer.optimizers):
            for i, p in enumerate(opt.param_groups[0]["params"]):
                prefix = f"rank{r}/optim{k}/{i}/"
                names = sorted(key[len(prefix):] for key in buffers if key.startswith(prefix))
                if not names:
                    continue
                st = opt.state.setdefault(p, {})
                for name in names:
                    value = buffers[prefix + name]
                    cur = st.get(name)
                    if cur is None:
                        cur = torch.zeros_like(p) if value.shape == _local(p).shape and hasattr(p, "to_local") else None
                    if cur is not None and hasattr(cur, "to_local"):
                        cur.to_local().copy_(value)
                        st[name] = cur
                    else:
                        st[name] = value.clone()


def export_hf(pm, cfg, overrides: dict[str, Any], out_dir: str) -> None:
    """Collective: gathers the full weights on rank 0 and writes a Hugging Face directory
    (config + safetensors) there. Needs the ``hf`` extra (transformers, safetensors)."""
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
    try:
        hf = models.to_hf(model)
    except ModuleNotFoundError:
        raise ValueError("checkpoint.export_hf needs the hf extra: pip install 'galvatron[hf]'") from None
    hf.save_pretrained(out_dir, safe_serialization=True)
    if missing:
        print(f"note: {len(missing)} tensors kept their initial values in the export: {missing[:5]}", flush=True)
