"""Parameters shared by several layers (T5's relative-position-bias tables).

A parameter registered under names in several ``layers.i`` (``tied_parameters`` lists them) is
taken out of the layers into a unit of its own: the module that owns it (e.g. ``attn.rel_bias``,
an ``nn.Embedding`` whose only parameter it is) stays reachable as a plain attribute of every
user layer but is no longer a registered child, so the layer's FSDP2 / DDP / ZeRO-1 never see
it. Every rank of every stage that holds a user layer keeps the whole tensor (tensor
parallelism does not slice it; ``attn.head_start`` picks the local heads' columns).

Gradient: in every user layer, rank ``(t, j, d)`` computes the attention of batch block ``d``
for the heads of tp rank ``t`` and sp rank ``j`` over the whole sequence. These pieces are
disjoint and cover the layer, whatever its strategy (tp, Megatron-SP, Ulysses, dp, ZeRO,
checkpointing), so the true gradient is the plain **sum** of the local gradients over all ranks
holding the tensor: one all-reduce after backward over the stages that use it. AdamW then
updates identical replicas identically (one optimizer entry per rank).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from galvatron.parallel.mesh import coords
from galvatron.parallel.units import Unit, describe_params
from galvatron.plan import LayerStrategy


@dataclass
class SharedParam:
    name: str  # owner name in the single-process model (its first registration)
    param: nn.Parameter
    layers: tuple[int, ...]  # indices of the layers using it
    owners: list[tuple[nn.Module, str]]  # (parent, attribute) of every registration's module
    names: tuple[str, ...] = ()  # every name it is registered under in the model


def find_shared(layers: nn.ModuleList) -> list[SharedParam]:
    """Parameters of ``layers`` registered in more than one layer, in registration order."""
    names: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for n, p in layers.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(n)
        params[id(p)] = p
    out = []
    for pid, ns in names.items():
        used_by = tuple(sorted({int(n.split(".", 1)[0]) for n in ns}))
        if len(used_by) < 2:
            continue
        owners = []
        for n in ns:
            mod_path = n.rpartition(".")[0]
            parent_path, _, attr = mod_path.rpartition(".")
            mod = layers.get_submodule(mod_path)
            if "." not in mod_path or len(list(mod.parameters())) != 1:
                raise ValueError(f"layers.{n}: a parameter shared by layers {list(used_by)} must "
                                 "be the only parameter of a submodule (e.g. an nn.Embedding) "
                                 "for the runtime to hold it apart from the layers")
            owners.append((layers.get_submodule(parent_path), attr))
        out.append(SharedParam("layers." + ns[0], params[pid], used_by, owners,
                               tuple("layers." + n for n in ns)))
    return out


def detach_from_layers(shared: SharedParam) -> nn.Module:
    """Unregister the owning module from every user (it stays a plain attribute, so the
    layers' forward is unchanged); returns the module."""
    mod = None
    for parent, attr in shared.owners:
        mod = parent._modules.pop(attr, None)
        if mod is None:  # a second registration of a module already taken out
            mod = parent.__dict__[attr]
        object.__setattr__(parent, attr, mod)  # reachable, but not a child: not in .parameters()
    assert mod is not None
    return mod


class SharedHolder(nn.Module):
    """The unit module of one shared parameter (never called)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.shared = module


def stages_using(shared: SharedParam, stage_layers: tuple[int, ...], pp: int) -> list[int]:
    """Pipeline stages holding at least one layer that uses ``shared`` (chunk ``c`` runs on
    stage ``c % pp``)."""
    stages, start = set(), 0
    for c, count in enumerate(stage_layers):
        if any(start <= i < start + count for i in shared.layers):
            stages.add(c % pp)
        start += count
    return sorted(stages)


def holders(shared: SharedParam, stage_layers: tuple[int, ...], pp: int,
            n: int) -> list[list[int]]:
    """Partition of the world (``pp * n`` ranks) for the group of ``shared``: the ranks of
    every stage using it, then singletons."""
    ranks = [st * n + i for st in stages_using(shared, stage_layers, pp) for i in range(n)]
    return [ranks] + [[r] for r in range(pp * n) if r not in ranks]


def shared_unit(shared: SharedParam, module: nn.Module, group, stage_size: int, local_rank: int,
                names_by_id: dict[int, str]) -> Unit:
    """The replicated unit holding ``module`` (the detached owner of ``shared``); ``group``:
    all its holders (its gradient is summed over them)."""
    holder = SharedHolder(module)
    meta = describe_params(holder, shared.name, names_by_id)
    for m in meta:
        m.tp_partial = False  # whole on every holder (tp marked it partial): summed over all
    s = LayerStrategy()
    return Unit(f"shared.{shared.name}", holder, s, coords(s, stage_size, local_rank), None, None, group, meta,
                replicated=True)
