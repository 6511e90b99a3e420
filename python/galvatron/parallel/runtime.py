"""Build this rank's part of a model under a plan, and train it.

See the package docstring (:mod:`galvatron.parallel`) for the API and ``docs/runtime.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from galvatron.models.base import GalvatronModel
from galvatron.parallel import data_parallel as DP
from galvatron.parallel import tensor_parallel as TP
from galvatron.parallel.instrument import region
from galvatron.parallel.mesh import Groups, coords, validate
from galvatron.parallel.redistribute import (
    Layout,
    boundary_layout,
    embedding_layout,
    layout_of,
    redistribute,
)
from galvatron.parallel.shared import detach_from_layers, find_shared, holders, shared_unit
from galvatron.parallel.ulysses import apply_ulysses
from galvatron.parallel.units import (
    EmbedIO,
    HeadIO,
    LayerIO,
    ParamMeta,
    Unit,
    describe_params,
    local_grad,
)
from galvatron.plan import DpType, LayerStrategy, Plan, Precision, SpKind


@dataclass
class Context:
    """What every chunk of this rank needs: stage geometry and groups."""

    plan: Plan
    rank: int
    stage: int
    me: int  # local index inside the stage
    n: int  # devices per stage
    seq_len: int
    decoder_seq_len: int  # encoder-decoder models: the decoder length (else seq_len)
    stage_group: object
    groups: Groups
    device: torch.device = torch.device("cpu")


class Chunk(nn.Module):
    """One pipeline chunk on this rank: [embedding] -> layers -> [head], moving activations
    between the layouts of consecutive units (and to the pipeline boundary layout)."""

    def __init__(self, ctx: Context, embed: Unit | None, layers: list[Unit], head: Unit | None,
                 in_layout: Layout | None, out_layout: Layout | None) -> None:
        super().__init__()
        self.ctx = ctx
        self.embed_unit, self.layer_units, self.head_unit = embed, layers, head
        self.embed = embed.module if embed else None
        self.layers = nn.ModuleList(u.module for u in layers)
        self.head = head.module if head else None
        owner = getattr(self.embed, "owner", None) or getattr(self.head, "owner", None)
        if owner is not None:  # merged embedding+head (see _EmbedHead): register it once
            self.embed_head = owner
        self.in_layout, self.out_layout = in_layout, out_layout
        e = ctx.plan.embedding
        self.emb_layout = embedding_layout(e, ctx.n)
        self.layouts = [layout_of(u.strategy, ctx.n) for u in layers]

    def _move(self, x, src, dst):
        c = self.ctx  # the sequence length is read from x: layers may change it (Swin)
        return redistribute(x, src, dst, c.me, c.n, c.plan.micro_batch_size,
                            x.shape[1] * src.n_seq, c.stage_group)

    def _block(self, lay: Layout):
        return lay.block(self.ctx.me, self.ctx.plan.micro_batch_size, self.ctx.seq_len)

    def forward(self, x, mask=None, memory=None, memory_mask=None):
        """``x``: the micro-batch ids (first chunk) or this rank's boundary block; ``mask``:
        the whole micro-batch's padding mask ``[mb, seq]`` or None (passed on to the next
        chunk beside the hidden block). Encoder-decoder models also carry the second stream
        in Carry order: ``memory`` (its ids in the first chunk, else this rank's block; moved
        between layouts exactly like ``x``) and its whole-micro-batch ``memory_mask``; an
        absent mask is None or a ``[mb, 0]`` tensor (pipeline stages send only tensors)."""
        mask, memory_mask = _present(mask), _present(memory_mask)
        two = memory is not None
        if self.embed is not None:
            b0, b1, *_ = self._block(self.emb_layout)
            if two:
                x, memory = self.embed(x[b0:b1], memory[b0:b1])
            else:
                x = self.embed(x[b0:b1])
            cur = self.emb_layout
        else:
            cur = self.in_layout
        for layer, lay in zip(self.layers, self.layouts, strict=True):
            x = self._move(x, cur, lay)
            if two:
                memory = self._move(memory, cur, lay)
            cur = lay
            b0, b1, *_ = self._block(lay)
            rows, mrows = (None if m is None else m[b0:b1] for m in (mask, memory_mask))
            if not two:
                x = layer(x, rows)
                continue
            if not layer.swaps_streams:  # memory passes through unchanged (see LayerIO)
                x = layer(x, rows, memory, mrows)
                continue
            x, memory = layer(x, rows, memory, mrows)  # hidden and memory swapped: the masks too
            mask, memory_mask = memory_mask, mask
        if self.head is not None:
            x = self._move(x, cur, self.emb_layout)
            return self.head(x)
        x = self._move(x, cur, self.out_layout)
        if not two:
            return x if mask is None else (x, mask)
        empty = x.new_empty((self.ctx.plan.micro_batch_size, 0), dtype=torch.long)
        return (x, empty if mask is None else mask, self._move(memory, cur, self.out_layout),
                empty if memory_mask is None else memory_mask)


def _present(mask):
    """None for an absent mask (None or an empty ``[mb, 0]`` placeholder)."""
    return None if mask is None or mask.numel() == 0 else mask


@dataclass
class ParallelModel:
    """This rank's part of the model (returned by :func:`galvatron.parallel.build`)."""

    plan: Plan
    ctx: Context
    chunks: list[Chunk]
    units: list[Unit]
    optimizer: object  # Optimizers
    shift_labels: bool
    ties: list[tuple[nn.Parameter, nn.Parameter | None, object]] = field(default_factory=list)
    schedule: object = None
    max_grad_norm: float | None = None
    input_key: str = "input_ids"
    memory_inputs: tuple[str, str] | None = None  # encoder-decoder: second-stream input names
    memory_ids: object = None  # batch -> second-stream ids (the model's, e.g. shifted labels)
    token_loss: bool = True  # vocabulary head: per-token loss; else per-sample (model.loss)
    loss_fn: object = None
    last_grad_norm: float | None = None  # global gradient norm of the last step (before clipping)
    full_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # single-process shapes
    _count: int = 1  # global label-token (or sample) count of the current step

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict[str, torch.Tensor]) -> float:
        """One optimizer step on the *global* batch (identical on every rank; each rank
        slices its part). Returns the global mean token loss (the same on every rank)."""
        from galvatron.parallel.pipeline import run_microbatches

        with region("other"):  # instrumentation: what no inner region claims
            inputs, labels, count = self._inputs(batch)
            self.optimizer.zero_grad()
            with self._autocast():
                local = run_microbatches(self, inputs, labels, count)
            self.finish_grads()
            with region("optimizer"):
                if self.max_grad_norm is not None:
                    self.last_grad_norm = self.clip_grad_norm(self.max_grad_norm)
                self.optimizer.step()
            return self._global_loss(local)

    def eval_step(self, batch: dict[str, torch.Tensor]) -> float:
        """The global mean loss of `batch` (forward only: no gradients, no optimizer step)."""
        from galvatron.parallel.pipeline import run_microbatches

        inputs, labels, count = self._inputs(batch)
        # Pipeline schedules run their own forward-only path (and refuse no_grad around it).
        grad = torch.enable_grad() if self.plan.pp > 1 else torch.no_grad()
        with self._autocast(), grad:
            local = run_microbatches(self, inputs, labels, count, train=False)
        return self._global_loss(local)

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
        primary = is_head_rank and coords(self.plan.embedding, ctx.n, ctx.me).t == 0
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
        lay = embedding_layout(self.plan.embedding, self.ctx.n)
        seq = labels_mb.shape[1] if labels_mb.dim() > 1 else self.ctx.seq_len  # T5: decoder
        b0, b1, s0, s1, _ = lay.block(self.ctx.me, self.plan.micro_batch_size, seq)
        if not self.token_loss:  # the model's mean loss over its samples, times their number
            return self.loss_fn(logits, {"labels": labels_mb[b0:b1]}) * (b1 - b0)
        head_mod = self.chunks[-1].head_unit.module
        head_mod = getattr(head_mod, "owner", head_mod)
        vh = _find(head_mod, TP.VocabHead)
        return TP.vocab_parallel_loss_sum(logits, labels_mb[b0:b1, s0:s1], vh)

    # ------------------------------------------------------------------ gradients
    def finish_grads(self) -> None:
        """After the last micro-batch: DDP sync (overlapped with backward), tied pairs,
        Megatron-SP partial sums over tp, ZeRO-1 reduce-scatter (FSDP2 reduced already)."""
        for u in self.units:  # DDP all-reduces started in backward (sums commute with the rest)
            if u.ddp is not None:
                u.ddp.finish()
        for u in self.units:  # parameters shared by several layers: sum over their holders
            if u.replicated:
                DP.all_reduce_grads(u.dp_params, u.weight_group)
        with region("dp_comm"):
            self._sync_ties()
        for u in self.units:
            with region("tp_comm"):
                self._sum_tp_partial(u)
            if u.zero1 is not None:
                u.zero1.reduce_scatter()

    def _sync_ties(self) -> None:
        """Tied embedding/head weights: both copies get the sum of their gradients."""
        for a, b, group in self.ties:
            ga, gb = a.grad, b.grad if b is not None else None
            if b is not None:  # both copies on this rank
                s = _loc(ga) + _loc(gb)
                _loc(ga).copy_(s)
                _loc(gb).copy_(s)
            elif group is not None:
                dist.all_reduce(_loc(ga), group=group)

    def _sum_tp_partial(self, u: Unit) -> None:
        """Megatron-SP: sum the partial gradients of ``u``'s whole parameters over tp."""
        partial = [p for p, m in zip(u.params(), u.meta, strict=True) if m.tp_partial]
        if partial and u.tp_group is not None:
            _ensure_grads(partial)
            flat = torch.cat([_loc(p.grad).reshape(-1) for p in partial])
            dist.all_reduce(flat, group=u.tp_group)
            off = 0
            for p in partial:
                g = _loc(p.grad)
                g.copy_(flat[off:off + g.numel()].view_as(g))
                off += g.numel()

    def clip_grad_norm(self, max_norm: float) -> float:
        """Clip by the global gradient norm over every mesh (each gradient element counted
        once); returns the norm before clipping."""
        sq = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        seen: set[int] = set()
        for u in self.units:
            tp = u.strategy.tp
            wg = 1 if u.weight_group is None else dist.get_world_size(u.weight_group)
            if u.zero1 is not None:
                for p, a, b, _ in u.zero1.segments():
                    m = u.meta[_index(u.params(), p)]
                    if m.tied_alias:
                        continue
                    off = _offset(u.zero1, p)
                    g = u.zero1.grad[off + a - u.zero1.lo:off + b - u.zero1.lo]
                    sq += g.double().pow(2).sum() / (1 if m.src else tp)
                continue
            for p, m in zip(u.params(), u.meta, strict=True):
                g = local_grad(p)
                if g is None or m.tied_alias or id(p) in seen:
                    continue
                seen.add(id(p))
                w = (1 if m.src else tp) * (1 if u.fsdp else wg)
                sq += g.double().pow(2).sum() / w
        dist.all_reduce(sq)
        norm = float(sq.sqrt())
        coef = max_norm / (norm + 1e-6)
        if coef < 1.0:
            done: set[int] = set()
            for u in self.units:
                for p in u.params():
                    g = local_grad(p)
                    if g is not None and id(p) not in done:
                        done.add(id(p))
                        g.mul_(coef)
                if u.zero1 is not None and u.zero1.grad is not None:
                    u.zero1.grad.mul_(coef)
        return norm

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


def _loc(t):
    return t.to_local() if hasattr(t, "to_local") else t


def _ensure_grads(params):
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def _index(params, p):
    for i, q in enumerate(params):
        if q is p:
            return i
    raise AssertionError


def _offset(z, p):
    off = 0
    for q in z.params:
        if q is p:
            return off
        off += q.numel()
    raise AssertionError


def _find(module, cls):
    for m in module.modules():
        if isinstance(m, cls):
            return m
    raise AssertionError(f"no {cls.__name__} in {type(module).__name__}")


class Optimizers:
    """AdamW over DDP/ZeRO-2/3 parameters plus :class:`ZeroOneAdamW` over ZeRO-1 shards."""

    def __init__(self, params, shards, ddp=(), **kw) -> None:
        self.ddp = list(ddp)
        self.adamw = torch.optim.AdamW(params, foreach=False, **kw) if params else None
        self.zero1 = DP.ZeroOneAdamW(shards, **kw) if shards else None
        self.params = params

    @property
    def optimizers(self):
        return [o for o in (self.adamw, self.zero1) if o is not None]

    def zero_grad(self):
        for p in self.params:
            p.grad = None
        for d in self.ddp:  # DDP units accumulate into zeroed flat buffers
            d.prepare()
        if self.zero1 is not None:
            for s in self.zero1.shards:
                for p in s.params:
                    p.grad = None

    def step(self):
        for o in self.optimizers:
            o.step()


# ---------------------------------------------------------------------------- build


def _vocab_modules(model: GalvatronModel):
    """The vocabulary embedding and projection, or None for models without them (ViT)."""
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is None:
        return None
    emb = [(n, m) for n, m in model.embed.named_modules()
           if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    head = [(n, m) for n, m in model.head.named_modules()
            if isinstance(m, nn.Linear) and m.out_features == vocab]
    if len(emb) != 1 or len(head) != 1:
        raise ValueError(f"{type(model).__name__}: the runtime needs one vocabulary embedding "
                         "and one vocabulary projection in the head")
    return emb[0], head[0]


def _set(root: nn.Module, name: str, mod: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, mod)


def build(model: str | GalvatronModel, plan: Plan, *, seed: int = 0, seq_len: int | None = None,
          decoder_seq_len: int | None = None,
          lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
          max_grad_norm: float | None = None, timeout_s: float = 60.0,
          device: str | torch.device | None = None) -> ParallelModel:
    """Build this rank's part of ``model`` under ``plan`` (see :mod:`galvatron.parallel`)."""
    from galvatron import models as M

    if isinstance(model, str):
        model = M.build(model, seed=seed)
    if not dist.is_initialized():
        raise ValueError("torch.distributed is not initialised; call init_process_group first")
    plan.validate(world_size=dist.get_world_size())
    seq_len = seq_len or getattr(model.config, "max_seq_len", None)
    if seq_len is None:
        raise ValueError("seq_len: required for models without max_seq_len")
    validate(plan, model, seq_len, decoder_seq_len)
    decoder_seq_len = decoder_seq_len or seq_len
    b = _Builder(model, plan, (seq_len, decoder_seq_len), timeout_s, device)
    units_all, chunks = b.shared_units(), []
    for c in b.my_chunks:
        embed_u = b.embed_unit() if c == 0 else None
        layer_units = [b.layer_unit(i) for i in range(b.starts[c], b.starts[c] + plan.stage_layers[c])]
        head_u = b.head_unit() if c == b.num_chunks - 1 else None
        if b.sharded_tie:  # one FSDP2 unit over embedding and head: the tied tensor once
            embed_u, head_u, pair = _merge_tied(embed_u, head_u)
            units_all += [pair] + layer_units
        else:
            units_all += ([embed_u] if embed_u else []) + layer_units + ([head_u] if head_u else [])
        in_l = None if c == 0 else boundary_layout(b.n, plan.micro_batch_size)
        out_l = None if c == b.num_chunks - 1 else boundary_layout(b.n, plan.micro_batch_size)
        chunks.append(Chunk(b.ctx, embed_u, layer_units, head_u, in_l, out_l))
    shared = [u.module for u in units_all if u.replicated]
    if shared:  # registered once, so chunk parameters (checkpoints) cover everything held
        chunks[0].shared = nn.ModuleList(shared)
    adam_params, shards = _apply_data_parallel(units_all, plan, b.ctx.device)
    b.originals.clear()
    pm = ParallelModel(plan, b.ctx, chunks, units_all,
                       Optimizers(adam_params, shards, [u.ddp for u in units_all if u.ddp],
                                  lr=lr, betas=betas, eps=eps, weight_decay=weight_decay),
                       bool(getattr(model, "shift_labels", False)), max_grad_norm=max_grad_norm,
                       input_key=b.key, token_loss=b.vocab is not None, loss_fn=model.loss,
                       memory_inputs=model.memory_inputs, memory_ids=model.memory_ids,
                       full_shapes=b.full_shapes)
    if b.ties and not b.keep_tie:  # two copies: on this rank (pp=1, ZeRO-2/3) or two stages
        emb_p, head_p = _vocab_param(units_all, "embed"), _vocab_param(units_all, "head")
        if emb_p is not None and head_p is not None:
            pm.ties.append((emb_p, head_p, None))
        elif emb_p is not None or head_p is not None:
            pm.ties.append((emb_p if emb_p is not None else head_p, None, b.tie_group))
    if plan.pp > 1:
        from galvatron.parallel.pipeline import build_schedule

        pm.schedule = build_schedule(pm, b.pp_group)
    return pm


class _Builder:
    """Groups, geometry and the unit constructors of one rank (used by :func:`build`)."""

    def __init__(self, model, plan: Plan, seq_lens: tuple[int, int], timeout_s: float,
                 device) -> None:
        import datetime

        world, rank = dist.get_world_size(), dist.get_rank()
        self.model, self.plan, self.n = model, plan, plan.devices_per_stage
        n = self.n
        groups = Groups(rank, world, datetime.timedelta(seconds=timeout_s))
        # Every group in plan order on every rank (new_group is collective).
        self.grp = {(s, axis): groups.layer_group(s, n, axis)
                    for s in (*plan.layers, plan.embedding) for axis in ("tp", "sp", "weight")}
        stage_group = groups.stage_group(n)
        self.pp_group = groups.pipeline_group(n) if plan.pp > 1 else None
        stage, self.me = divmod(rank, n)
        if device is None:  # NCCL: this rank's current CUDA device; otherwise CPU
            device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        device = torch.device(device)
        params = list(model.parameters())
        # (fake tensors already on the device, as `galvatron check --fake` makes them, cannot
        # be moved by Module.to: it is skipped when nothing needs moving)
        if not any(p.is_meta for p in params) and any(p.device != device for p in params):
            model.to(device)
        self.ctx = Context(plan, rank, stage, self.me, n, *seq_lens, stage_group, groups, device)
        self.shared = find_shared(model.layers)  # before any layer is wrapped
        shared_names = {n for sp in self.shared for n in sp.names}
        self.ties = [t for t in model.tied_parameters() if t[0] not in shared_names]
        self.tie_group = None
        if self.ties and plan.pp > 1:
            self.tie_group = groups.pair_group([[i, (plan.pp - 1) * n + i] for i in range(n)]
                                               + [[r] for r in range(n, (plan.pp - 1) * n)])
        self.originals = list(model.parameters())  # keeps ids unique while layers are replaced
        self.full_shapes = {nm: tuple(p.shape) for nm, p in model.named_parameters()}
        self.names_by_id: dict[int, str] = {}
        for nm, p in model.named_parameters(remove_duplicate=False):
            self.names_by_id.setdefault(id(p), nm)
        # Every rank creates the shared parameters' groups in the same order.
        self.shared_groups = [groups.get(holders(sp, plan.stage_layers, plan.pp, n))
                              for sp in self.shared]
        self.shared_modules = [detach_from_layers(sp) for sp in self.shared]
        self.num_chunks = len(plan.stage_layers)
        self.starts = [sum(plan.stage_layers[:c]) for c in range(self.num_chunks)]
        self.my_chunks = [c for c in range(self.num_chunks) if c % plan.pp == stage]
        self.vocab = _vocab_modules(model)
        e = self.e = plan.embedding
        if self.vocab is None and (e.tp > 1 or embedding_layout(e, n).n_seq > 1):
            raise ValueError("embedding: a model without a vocabulary embedding/head supports "
                             "only data parallelism there (tp=1, no sequence split)")
        self.key = model.input_names[0]
        self.memory_key = model.memory_inputs[0] if model.memory_inputs else None
        self.keep_tie = bool(self.ties) and plan.pp == 1
        self.sharded_tie = (self.keep_tie and e.dp_type in (DpType.ZERO2, DpType.ZERO3)
                            and self.grp[(e, "weight")] is not None)
        self.shared_vocab = None

    def shared_units(self) -> list[Unit]:
        """One replicated unit per layer-shared parameter that this rank's layers use."""
        mine = {i for c in self.my_chunks
                for i in range(self.starts[c], self.starts[c] + self.plan.stage_layers[c])}
        return [shared_unit(sp, mod, group, self.n, self.me, self.names_by_id)
                for sp, group, mod in zip(self.shared, self.shared_groups, self.shared_modules,
                                          strict=True)
                if mine.intersection(sp.layers)]

    def groups_of(self, s: LayerStrategy):
        return self.grp[(s, "tp")], self.grp[(s, "sp")], self.grp[(s, "weight")]

    def _unit(self, name, module, s, meta) -> Unit:
        return Unit(name, module, s, coords(s, self.n, self.me), *self.groups_of(s), meta)

    def embed_unit(self) -> Unit:
        model, e = self.model, self.e
        ve = None
        if self.vocab is not None:
            (emb_name, emb_mod), _ = self.vocab
            ve = TP.VocabEmbedding(emb_mod, e.tp, coords(e, self.n, self.me).t,
                                   self.grp[(e, "tp")])
            self.shared_vocab = ve.weight
            _set(model.embed, emb_name, ve)
        lay = embedding_layout(e, self.n)
        _, _, si, _, _ = lay.block(self.me, self.plan.micro_batch_size, lay.n_seq)
        mod = EmbedIO(model.embed, si, lay.n_seq, key=self.key, memory_key=self.memory_key)
        meta = describe_params(model.embed, "embed.", self.names_by_id)
        for p, m in zip(model.embed.parameters(), meta, strict=True):
            if ve is not None and p is ve.weight:
                m.name, m.vocab = self.names_by_id[id(emb_mod.weight)], True
        return self._unit("embed", mod, e, meta)

    def layer_unit(self, i: int) -> Unit:
        s = self.plan.layers[i]
        c = coords(s, self.n, self.me)
        tpg, spg, _ = self.groups_of(s)
        layer = self.model.layers[i]
        TP.apply_tp(layer, s.tp, c.t, tpg, s.sp_kind is SpKind.MEGATRON)
        apply_ulysses(layer, s.sp, c.j, spg)
        meta = describe_params(layer, f"layers.{i}.", self.names_by_id)
        return self._unit(f"layers.{i}", LayerIO(layer, s.checkpoint), s, meta)

    def head_unit(self) -> Unit:
        model, e = self.model, self.e
        if self.vocab is None:
            return self._unit("head", HeadIO(model.head), e,
                              describe_params(model.head, "head.", self.names_by_id))
        (_, emb_mod), (head_name, head_mod) = self.vocab
        tied = bool(self.ties) and head_mod.weight is emb_mod.weight
        weight = self.shared_vocab if (tied and self.keep_tie) else None
        vh = TP.VocabHead(head_mod, e.tp, coords(e, self.n, self.me).t, self.grp[(e, "tp")],
                          weight=weight)
        _set(model.head, head_name, vh)
        meta = describe_params(model.head, "head.", self.names_by_id)
        for p, m in zip(model.head.parameters(), meta, strict=True):
            if p is vh.weight:
                m.name, m.vocab = self.names_by_id[id(head_mod.weight)], True
                m.src = vh.weight._src
                m.tied_alias = tied and not self.keep_tie
        return self._unit("head", HeadIO(model.head), e, meta)


class _EmbedHead(nn.Module):
    """Embedding and head as one module (one FSDP2 unit sharding a tied tensor once); called
    with ``part`` = "embed" or "head"."""

    def __init__(self, embed: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.embed_io, self.head_io = embed, head
        self.zero3 = False  # set when FSDP2 shards it with ZeRO-3
        self.low_precision_params = False  # set when FSDP2 gathers bf16/fp16 copies

    def forward(self, *args, part: str):
        if not hasattr(self, "set_reshard_after_forward"):  # not sharded (one rank)
            return self.embed_io(*args) if part == "embed" else self.head_io(*args)
        if self.zero3:
            # ZeRO-3: free the gathered tensors after the embedding; keep them after the head,
            # whose backward follows at once (pp=1), instead of gathering them again
            self.set_reshard_after_forward(part == "embed")
        if part == "head":
            # one reduce-scatter per micro-batch, after the embedding's backward (the head's
            # gradient accumulates unsharded until then)
            self.set_requires_gradient_sync(False)
            return self.head_io(*args)
        out = self.embed_io(*args)
        for t in out if isinstance(out, tuple) else (out,):  # T5: two streams
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.register_hook(self._sync_next)
                break
        return out

    def _sync_next(self, grad):
        self.set_requires_gradient_sync(True)  # the embedding's backward comes next
        if self.low_precision_params:
            self._uniform_grad_dtype()
        return grad

    def _uniform_grad_dtype(self) -> None:
        """FSDP2 (torch 2.13) upcasts the head's unsynced low-precision gradients to its fp32
        accumulators, but leaves the embedding-only parameters' gradients (computed next) in the
        low precision, and its reduce-scatter then refuses the mixed dtypes. Give every
        parameter without an accumulator a zero fp32 one, so all are summed into fp32."""
        group = self._get_fsdp_state()._fsdp_param_group
        for fp in group.fsdp_params if group is not None else ():
            if fp.reduce_dtype is not None and fp.unsharded_accumulated_grad is None:
                fp.unsharded_accumulated_grad = torch.zeros_like(fp._unsharded_param, dtype=fp.reduce_dtype)


class _Part:
    """Callable view of one part of :class:`_EmbedHead` (not a module: no second
    registration of its parameters)."""

    def __init__(self, owner: _EmbedHead, part: str) -> None:
        self.owner, self.part = owner, part

    def __call__(self, *args):
        return self.owner(*args, part=self.part)


def _merge_tied(embed_u: Unit, head_u: Unit):
    pair = _EmbedHead(embed_u.module, head_u.module)
    meta = list(embed_u.meta)
    for p, m in zip(head_u.module.parameters(), head_u.meta, strict=True):
        if all(p is not q for q in embed_u.module.parameters()):
            meta.append(m)
    unit = Unit("embed_head", pair, embed_u.strategy, embed_u.coord, embed_u.tp_group,
                embed_u.sp_group, embed_u.weight_group, meta)
    assert len(meta) == len(list(pair.parameters()))
    e = Unit("embed", _Part(pair, "embed"), embed_u.strategy, embed_u.coord, None, None, None)
    h = Unit("head", _Part(pair, "head"), head_u.strategy, head_u.coord, None, None, None)
    return e, h, unit


# FSDP2 gathers and computes with parameters of the plan's compute dtype (fp32 master shards)
_PARAM_DTYPE = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def _apply_data_parallel(units: list[Unit], plan: Plan, device: torch.device):
    """FSDP2 / ZeRO-1 / DDP per unit (FSDP2 replaces parameters: after the metadata was taken).
    Returns the AdamW parameters and the ZeRO-1 shards; a shared parameter goes to its first
    unit only."""
    adam_params, shards = [], []
    seen: set[int] = set()
    for u in units:
        s = u.strategy
        if u.replicated:  # synced by finish_grads, stepped by AdamW on every holder
            u.dp_params = [p for p in u.params() if id(p) not in seen]
            seen.update(id(p) for p in u.dp_params)
            adam_params.extend(u.dp_params)
            continue
        if s.dp_type in (DpType.ZERO2, DpType.ZERO3) and u.weight_group is not None:
            # pp=1: the head's backward follows its forward at once, so ZeRO-3 keeps its
            # gathered tensors from forward to backward (as FSDP2 does for a root module)
            last = plan.pp == 1 and u.name == "head"
            DP.apply_fsdp(u.module, u.weight_group, DpType.ZERO2 if last else s.dp_type, device.type,
                          param_dtype=_PARAM_DTYPE.get(plan.precision))
            u.fsdp = True
            if isinstance(u.module, _EmbedHead):
                u.module.zero3 = s.dp_type is DpType.ZERO3
                u.module.low_precision_params = plan.precision in _PARAM_DTYPE
        params = [p for p in u.params() if id(p) not in seen]
        seen.update(id(p) for p in params)
        u.dp_params = params
        if s.dp_type is DpType.ZERO1 and u.weight_group is not None:
            u.zero1 = DP.ZeroOneShard(params, u.weight_group)
            shards.append(u.zero1)
        else:
            adam_params.extend(params)
            if u.weight_group is not None and params and not u.fsdp:
                u.ddp = DP.OverlappedAllReduce(params, u.weight_group, plan.num_microbatches)
    return adam_params, shards


def _vocab_param(units, which):
    for u in units:
        if u.name == which:
            for p, m in zip(u.params(), u.meta, strict=True):
                if m.vocab:
                    return p
    return None


__all__ = ["ParallelModel", "ParamMeta", "build"]
