"""What :func:`galvatron.parallel.build` needs to know about one rank before it composes the
techniques: its stage and local rank, every process group of the plan (created in plan order on
every rank: ``new_group`` is collective), the tied and shared parameters, and the constructors
of the units (embedding, layer, head) with their parameter metadata."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
from torch import nn

from galvatron.models.base import GalvatronModel
from galvatron.parallel import tensor_parallel
from galvatron.parallel.chunk import StageContext
from galvatron.parallel.gradients import TiedPair
from galvatron.parallel.mesh import Coord, Groups, coords
from galvatron.parallel.redistribute import embedding_layout
from galvatron.parallel.shared import detach_from_layers, find_shared, holders, shared_unit
from galvatron.parallel.tied import vocab_param
from galvatron.parallel.units import EmbedIO, HeadIO, LayerIO, Unit, describe_params
from galvatron.plan import DpType, LayerStrategy, Plan


class RankBuilder:
    """Groups, geometry and the unit constructors of one rank."""

    def __init__(self, model: GalvatronModel, plan: Plan, seq_lens: tuple[int, int],
                 timeout_s: float, device) -> None:
        world, rank = dist.get_world_size(), dist.get_rank()
        self.model, self.plan = model, plan
        self.stage_size = stage_size = plan.devices_per_stage
        groups = Groups(rank, world, datetime.timedelta(seconds=timeout_s))
        # Every group in plan order on every rank (new_group is collective).
        self.strategy_groups = {(s, axis): groups.layer_group(s, stage_size, axis)
                                for s in (*plan.layers, plan.embedding)
                                for axis in ("tp", "sp", "weight")}
        stage_group = groups.stage_group(stage_size)
        self.pp_group = groups.pipeline_group(stage_size) if plan.pp > 1 else None
        stage, self.local_rank = divmod(rank, stage_size)
        device = _place(model, device)
        self.ctx = StageContext(plan, rank, stage, self.local_rank, stage_size, *seq_lens,
                                stage_group, groups, device)
        self._find_shared_and_tied(groups)
        self.num_chunks = len(plan.stage_layers)
        self.starts = [sum(plan.stage_layers[:c]) for c in range(self.num_chunks)]
        self.my_chunks = [c for c in range(self.num_chunks) if c % plan.pp == stage]
        self.vocab = _vocab_modules(model)
        self.embedding = embedding = plan.embedding
        if self.vocab is None and (embedding.tp > 1 or embedding_layout(embedding, stage_size).n_seq > 1):
            raise ValueError("embedding: a model without a vocabulary embedding/head supports "
                             "only data parallelism there (tp=1, no sequence split)")
        self.input_key = model.input_names[0]
        self.memory_key = model.memory_inputs[0] if model.memory_inputs else None
        self.keep_tie = bool(self.ties) and plan.pp == 1
        self.sharded_tie = (self.keep_tie and embedding.dp_type in (DpType.ZERO2, DpType.ZERO3)
                            and self.strategy_groups[(embedding, "weight")] is not None)
        self.vocab_weight = None  # the vocabulary-parallel embedding's weight, once built

    def _find_shared_and_tied(self, groups: Groups) -> None:
        """Parameters shared by several layers (with their groups, in the same order on every
        rank), tied embedding/head pairs, and the names of every original parameter."""
        model, plan, stage_size = self.model, self.plan, self.stage_size
        self.shared = find_shared(model.layers)  # before any layer is wrapped
        shared_names = {name for sp in self.shared for name in sp.names}
        self.ties = [t for t in model.tied_parameters() if t[0] not in shared_names]
        self.tie_group = None
        if self.ties and plan.pp > 1:
            last = (plan.pp - 1) * stage_size
            self.tie_group = groups.pair_group([[i, last + i] for i in range(stage_size)]
                                               + [[r] for r in range(stage_size, last)])
        self.originals = list(model.parameters())  # keeps ids unique while layers are replaced
        self.full_shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        self.names_by_id: dict[int, str] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            self.names_by_id.setdefault(id(p), name)
        self.shared_groups = [groups.get(holders(sp, plan.stage_layers, plan.pp, stage_size))
                              for sp in self.shared]
        self.shared_modules = [detach_from_layers(sp) for sp in self.shared]

    def layer_range(self, chunk: int) -> range:
        return range(self.starts[chunk], self.starts[chunk] + self.plan.stage_layers[chunk])

    def shared_units(self) -> list[Unit]:
        """One replicated unit per layer-shared parameter that this rank's layers use."""
        mine = {i for c in self.my_chunks for i in self.layer_range(c)}
        return [shared_unit(sp, mod, group, self.stage_size, self.local_rank, self.names_by_id)
                for sp, group, mod in zip(self.shared, self.shared_groups, self.shared_modules,
                                          strict=True)
                if mine.intersection(sp.layers)]

    def coord(self, s: LayerStrategy) -> Coord:
        """This rank's coordinates under strategy ``s``."""
        return coords(s, self.stage_size, self.local_rank)

    def groups_of(self, s: LayerStrategy):
        """``(tp group, sp group, weight group)`` of this rank under strategy ``s``."""
        return tuple(self.strategy_groups[(s, axis)] for axis in ("tp", "sp", "weight"))

    def unit(self, name: str, module, s: LayerStrategy, meta) -> Unit:
        return Unit(name, module, s, self.coord(s), *self.groups_of(s), meta)

    def embed_unit(self) -> Unit:
        """The embedding, its vocabulary table made vocabulary-parallel over the embedding's tp."""
        model, embedding = self.model, self.embedding
        vocab_embedding = None
        if self.vocab is not None:
            (emb_name, emb_module), _ = self.vocab
            vocab_embedding = tensor_parallel.VocabEmbedding(
                emb_module, embedding.tp, self.coord(embedding).t, self.strategy_groups[(embedding, "tp")])
            self.vocab_weight = vocab_embedding.weight
            _set(model.embed, emb_name, vocab_embedding)
        layout = embedding_layout(embedding, self.stage_size)
        _, _, seq_block, _, _ = layout.block(self.local_rank, self.plan.micro_batch_size, layout.n_seq)
        module = EmbedIO(model.embed, seq_block, layout.n_seq, key=self.input_key,
                         memory_key=self.memory_key)
        meta = describe_params(model.embed, "embed.", self.names_by_id)
        for p, m in zip(model.embed.parameters(), meta, strict=True):
            if vocab_embedding is not None and p is vocab_embedding.weight:
                m.name, m.vocab = self.names_by_id[id(emb_module.weight)], True
        return self.unit("embed", module, embedding, meta)

    def layer_unit(self, i: int) -> Unit:
        """Layer ``i`` (already parallelized) as a unit, with activation checkpointing."""
        layer = self.model.layers[i]
        s = self.plan.layers[i]
        meta = describe_params(layer, f"layers.{i}.", self.names_by_id)
        return self.unit(f"layers.{i}", LayerIO(layer, s.checkpoint), s, meta)

    def head_unit(self) -> Unit:
        """The head, its vocabulary projection made vocabulary-parallel over the embedding's tp."""
        model, embedding = self.model, self.embedding
        if self.vocab is None:
            return self.unit("head", HeadIO(model.head), embedding,
                             describe_params(model.head, "head.", self.names_by_id))
        (_, emb_module), (head_name, head_module) = self.vocab
        tied = bool(self.ties) and head_module.weight is emb_module.weight
        weight = self.vocab_weight if (tied and self.keep_tie) else None
        vocab_head = tensor_parallel.VocabHead(head_module, embedding.tp, self.coord(embedding).t,
                                               self.strategy_groups[(embedding, "tp")], weight=weight)
        _set(model.head, head_name, vocab_head)
        meta = describe_params(model.head, "head.", self.names_by_id)
        for p, m in zip(model.head.parameters(), meta, strict=True):
            if p is vocab_head.weight:
                m.name, m.vocab = self.names_by_id[id(head_module.weight)], True
                m.src = vocab_head.weight._src
                m.tied_alias = tied and not self.keep_tie
        return self.unit("head", HeadIO(model.head), embedding, meta)

    def tied_pairs(self, units: list[Unit]) -> list[TiedPair]:
        """The tied embedding/head weights whose gradients must be summed: both copies on this
        rank (pp=1 without a merged unit), or one copy here and one on the other end stage."""
        if not self.ties or self.keep_tie:
            return []
        emb_p, head_p = vocab_param(units, "embed"), vocab_param(units, "head")
        if emb_p is not None and head_p is not None:
            return [(emb_p, head_p, None)]
        if emb_p is not None or head_p is not None:
            return [(emb_p if emb_p is not None else head_p, None, self.tie_group)]
        return []


def _place(model: nn.Module, device) -> torch.device:
    """This rank's device (NCCL: its current CUDA device; otherwise CPU), the model moved there."""
    if device is None:
        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    device = torch.device(device)
    params = list(model.parameters())
    # (fake tensors already on the device, as `galvatron check --fake` makes them, cannot
    # be moved by Module.to: it is skipped when nothing needs moving)
    if not any(p.is_meta for p in params) and any(p.device != device for p in params):
        model.to(device)
    return device


def _vocab_modules(model: GalvatronModel):
    """The vocabulary embedding and projection, or None for models without them (ViT)."""
    vocab = getattr(model.config, "vocab_size", None)
    if vocab is None:
        return None
    emb = [(name, m) for name, m in model.embed.named_modules()
           if isinstance(m, nn.Embedding) and m.num_embeddings == vocab]
    head = [(name, m) for name, m in model.head.named_modules()
            if isinstance(m, nn.Linear) and m.out_features == vocab]
    if len(emb) != 1 or len(head) != 1:
        raise ValueError(f"{type(model).__name__}: the runtime needs one vocabulary embedding "
                         "and one vocabulary projection in the head")
    return emb[0], head[0]


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)
