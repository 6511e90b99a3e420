"""Hugging Face interop: weights in and out of ``transformers`` models and checkpoints.

Each family describes its mapping as a list of :class:`Rule` (one Hugging Face tensor <->
one or more of our parameters, with a conversion each way) plus config converters, gathered
in an :class:`HFAdapter`. ``transformers`` is imported lazily (the ``hf`` extra); checkpoint
loading reads only ``*.safetensors`` (never pickles).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from galvatron._validate import check_int


@dataclass(frozen=True)
class Rule:
    """HF tensor ``hf`` <-> our parameters ``ours`` (names in our state dict)."""

    ours: tuple[str, ...]
    hf: str
    to_ours: Callable[[Tensor], tuple[Tensor, ...]] = lambda t: (t,)
    to_hf: Callable[..., Tensor] = lambda t: t


def same(ours: str, hf: str) -> Rule:
    return Rule((ours,), hf)


def weight_bias(ours: str, hf: str) -> list[Rule]:
    """``.weight`` and ``.bias`` of a linear / norm / conv under both prefixes."""
    return [same(f"{ours}.weight", f"{hf}.weight"), same(f"{ours}.bias", f"{hf}.bias")]


def transposed(ours: str, hf: str) -> Rule:
    """HF ``Conv1D`` (GPT-2) stores linear weights as ``[in, out]``."""
    return Rule((ours,), hf, lambda t: (t.t().contiguous(),), lambda t: t.t().contiguous())


def split(ours: tuple[str, ...], hf: str, dim: int, transpose: bool = False) -> Rule:
    """One fused HF tensor split in equal parts along ``dim`` (then transposed if asked)."""

    def to_ours(t: Tensor) -> tuple[Tensor, ...]:
        parts = t.chunk(len(ours), dim=dim)
        return tuple((p.t() if transpose else p).contiguous() for p in parts)

    def to_hf(*ts: Tensor) -> Tensor:
        return torch.cat([t.t() if transpose else t for t in ts], dim=dim).contiguous()

    return Rule(ours, hf, to_ours, to_hf)


@dataclass(frozen=True)
class HFAdapter:
    """How one family maps to ``transformers``.

    ``ignore``: regexes of HF state-dict keys with no counterpart here (buffers HF recomputes,
    tied duplicates); they are neither loaded nor reported as unexpected. ``disk_renames``:
    ``(regex, replacement)`` pairs from the in-memory names of transformers 5 to the names its
    ``save_pretrained`` writes (and the Hub uses) where the two differ (ViT, Swin); they are
    used wherever a name is not found as is.
    """

    architectures: tuple[str, ...]
    config_from_hf: Callable[[Any], Any]
    config_to_hf: Callable[[Any], Any]
    rules: Callable[[Any], list[Rule]]
    ignore: tuple[str, ...] = ()
    disk_renames: tuple[tuple[str, str], ...] = ()

    def ignored(self, key: str) -> bool:
        return any(re.fullmatch(p, key) for p in self.ignore)

    def disk_rules(self, cfg: Any, available: set[str]) -> list[Rule]:
        """Rules whose HF key is the name found in a checkpoint file: the in-memory name if
        present, else its renamed (serialised) form."""
        out = []
        for rule in self.rules(cfg):
            key = rule.hf
            if key not in available:
                for pattern, repl in self.disk_renames:
                    key = re.sub(pattern, repl, key)
            out.append(dataclasses.replace(rule, hf=key))
        return out


def _family_of_hf(archs: list[str], families: dict[str, Any]) -> Any:
    known = []
    for fam in families.values():
        if fam.hf is None:
            continue
        known += list(fam.hf.architectures)
        if any(a in fam.hf.architectures for a in archs):
            return fam
    raise ValueError(f"architectures: {archs!r} is not supported; accepted: {sorted(known)}")


def _load_rules(model: nn.Module, rules: Iterable[Rule], get: Callable[[str], Tensor]) -> None:
    """Copy the tensors of ``rules`` into ``model``; every materialised parameter must get one
    (the model may have been built with uninitialised memory)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded: set[int] = set()
    with torch.no_grad():
        for rule in rules:
            values = rule.to_ours(get(rule.hf))
            for name, value in zip(rule.ours, values, strict=True):
                p = params[name]
                if p.shape != value.shape:
                    raise ValueError(
                        f"{rule.hf}: shape {tuple(value.shape)} does not fit {name} "
                        f"{tuple(p.shape)}"
                    )
                p.copy_(value.to(p.dtype))
                loaded.add(id(p))
    left = [n for n, p in model.named_parameters() if not p.is_meta and id(p) not in loaded]
    assert not left, f"no Hugging Face tensor maps to {left}"  # a gap in a family's rules


def _check_keys(adapter: HFAdapter, rules: list[Rule], available: Iterable[str], family: str) -> None:
    available = set(available)
    wanted = {r.hf for r in rules}
    missing = sorted(wanted - available)
    unexpected = sorted(k for k in available - wanted if not adapter.ignored(k))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the {family} architecture: missing keys {missing}; "
            f"unexpected keys {unexpected}"
        )


def from_hf(hf_model: nn.Module, families: dict[str, Any]) -> nn.Module:
    """Our model with the weights of a ``transformers`` model (same config, copied tensors).
    ``families``: the registry (``galvatron.models.FAMILIES``; passed in, so this module does
    not import the package that imports it)."""
    fam = _family_of_hf([type(hf_model).__name__], families)
    cfg = fam.hf.config_from_hf(hf_model.config)
    with torch.device("meta"):  # no initialisation work: every tensor is copied below
        model = fam.model_cls(cfg)
    model.to_empty(device="cpu")
    model.retie()
    sd = hf_model.state_dict()
    rules = fam.hf.disk_rules(cfg, set(sd))
    _check_keys(fam.hf, rules, sd.keys(), fam.name)
    _load_rules(model, rules, sd.__getitem__)
    return model.train(hf_model.training)


def to_hf(model: nn.Module, families: dict[str, Any]) -> nn.Module:
    """A ``transformers`` model with our weights (built on CPU from the converted config).
    To write a checkpoint directory without building it (large models, sharded layout), see
    :func:`save_hf_checkpoint`."""
    import transformers

    fam = families[model.config.family]
    hf_config = fam.hf.config_to_hf(model.config)
    hf_model = getattr(transformers, hf_config.architectures[0])(hf_config)
    ours = model.state_dict()
    sd = hf_model.state_dict()
    storage_owner = {}
    rules = fam.hf.disk_rules(model.config, set(sd))
    for rule in rules:
        storage_owner[sd[rule.hf].untyped_storage().data_ptr()] = rule.hf
        sd[rule.hf] = rule.to_hf(*(ours[n] for n in rule.ours)).clone()
    covered = {r.hf for r in rules}
    for key, value in list(sd.items()):  # HF-side ties (e.g. the LM head): same new value
        owner = storage_owner.get(value.untyped_storage().data_ptr())
        if key not in covered and owner is not None:
            sd[key] = sd[owner]
    hf_model.load_state_dict(sd, strict=True)
    after = hf_model.state_dict()
    lost = sorted(k for k in covered if not torch.equal(after[k], sd[k]))
    if lost:  # e.g. a tie the installed transformers imposes that our config does not have
        raise ValueError(f"this transformers version cannot hold these weights: {lost} are tied "
                         f"to other tensors there (check tie_word_embeddings)")
    return hf_model.train(model.training)


INDEX_NAME = "model.safetensors.index.json"


def _read_index(path: str, index: str) -> dict[str, str]:
    """HF key -> shard file from ``model.safetensors.index.json``, every entry checked: the
    file must be a ``*.safetensors`` file directly in ``path`` (no other directory)."""
    where = f"{index}: "
    try:
        with open(index, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}cannot read it as JSON: {e}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{where}'weight_map' must be a non-empty object of tensor name -> "
                         "shard file name")
    out: dict[str, str] = {}
    for key, name in weight_map.items():
        if (not isinstance(name, str) or not name.endswith(".safetensors")
                or os.path.basename(name) != name or name in (".", "..")):
            raise ValueError(f"{where}weight_map[{key!r}] = {name!r}: accepted: the name of a "
                             "*.safetensors file in the checkpoint directory")
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            raise ValueError(f"{where}weight_map[{key!r}]: shard {name!r} does not exist")
        out[key] = file
    return out


def _safetensors_index(path: str) -> dict[str, str]:
    """HF key -> safetensors file, from ``model.safetensors.index.json`` (sharded checkpoints:
    no shard is opened here) or else from the headers of every ``*.safetensors`` file."""
    index = os.path.join(path, INDEX_NAME)
    if os.path.exists(index):
        return _read_index(path, index)
    from safetensors import safe_open

    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{path}: no *.safetensors file (pickled checkpoints are not loaded)")
    out: dict[str, str] = {}
    for name in files:
        with safe_open(os.path.join(path, name), framework="pt") as f:
            out.update(dict.fromkeys(f.keys(), os.path.join(path, name)))
    return out


def load_hf_checkpoint(
    path: str | os.PathLike[str],
    families: dict[str, Any],
    layer_indices: Iterable[int] | None = None,
    include_embedding: bool = True,
    include_head: bool = True,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build our model from a local HF directory (``config.json`` + ``model.safetensors``, or a
    sharded ``model.safetensors.index.json`` + ``model-0000k-of-0000n.safetensors``).

    With ``layer_indices`` (and/or ``include_embedding``/``include_head`` False) only those
    parts are materialised on ``device`` and only their tensors are read (``safe_open``,
    key by key; of a sharded checkpoint only the shards holding them are opened); every other
    part stays on the ``meta`` device. Parameters tied across parts (e.g. GPT-2's head and
    embedding) are materialised if any requested part uses them.
    """
    import transformers
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(os.path.join(path, "config.json")):
        raise ValueError(f"{path}: no config.json")
    hf_config = transformers.AutoConfig.from_pretrained(path)
    fam = _family_of_hf(list(getattr(hf_config, "architectures", None) or []), families)
    cfg = fam.hf.config_from_hf(hf_config)
    with torch.device("meta"):
        model = fam.model_cls(cfg)
    n = len(model.layers)
    indices = list(range(n)) if layer_indices is None else sorted(set(layer_indices))
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise ValueError(f"layer_indices {bad} out of range; the model has {n} layers")
    parts = [model.layers[i] for i in indices]
    parts += [model.embed] if include_embedding else []
    parts += [model.head] if include_head else []
    for part in parts:
        part.to_empty(device=device)
    model.retie()
    wanted = {id(p) for part in parts for p in part.parameters()}
    params = dict(model.named_parameters(remove_duplicate=False))
    index = _safetensors_index(path)
    all_rules = fam.hf.disk_rules(cfg, set(index))
    _check_keys(fam.hf, all_rules, index.keys(), fam.name)
    rules = [r for r in all_rules if any(id(params[o]) in wanted for o in r.ours)]
    handles: dict[str, Any] = {}
    try:
        def get(key: str) -> Tensor:
            file = index[key]
            if file not in handles:
                handles[file] = safe_open(file, framework="pt", device="cpu")
            if key not in handles[file].keys():
                raise ValueError(f"{file}: has no tensor {key!r} (named there by {INDEX_NAME})")
            return handles[file].get_tensor(key)

        _load_rules(model, rules, get)
    finally:
        handles.clear()
    return model.eval()


def _shard_name(k: int, n: int) -> str:
    return f"model-{k:05d}-of-{n:05d}.safetensors"


def save_hf_checkpoint(model: nn.Module, path: str | os.PathLike[str], families: dict[str, Any],
                       max_shard_bytes: int = 5 * 2**30) -> list[str]:
    """Write ``model`` as a Hugging Face checkpoint directory: ``config.json`` and the weights
    in the layout ``save_pretrained`` writes -- one ``model.safetensors`` when they fit in
    ``max_shard_bytes``, else ``model-0000k-of-0000n.safetensors`` shards (tensors in model
    order, a new shard whenever the next tensor would overflow; one larger tensor gets a shard
    of its own) with ``model.safetensors.index.json``. No ``transformers`` model is built and
    only one shard's converted tensors are held at a time, so large models fit. Returns the
    weight files written. ``families``: the registry (``galvatron.models.FAMILIES``)."""
    from safetensors.torch import save_file

    check_int(max_shard_bytes, "max_shard_bytes", 1, 2**62)  # bytes: past the int32 range of counts
    path = os.fspath(path)
    fam = families[model.config.family]
    hf_config = fam.hf.config_to_hf(model.config)
    ours = dict(model.named_parameters(remove_duplicate=False))
    rules = fam.hf.disk_rules(model.config, set())  # the serialised names
    sizes = [sum(ours[n].numel() * ours[n].element_size() for n in r.ours) for r in rules]
    shards: list[list[int]] = [[]]
    used = 0
    for i, size in enumerate(sizes):
        if shards[-1] and used + size > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(i)
        used += size
    names = (["model.safetensors"] if len(shards) == 1
             else [_shard_name(k + 1, len(shards)) for k in range(len(shards))])
    os.makedirs(path, exist_ok=True)
    for old in os.listdir(path):  # weights of an earlier save would be read with ours
        if old not in names and re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors", old):
            os.remove(os.path.join(path, old))
    hf_config.save_pretrained(path)
    weight_map = {}
    for name, members in zip(names, shards, strict=True):
        with torch.no_grad():
            tensors = {rules[i].hf: rules[i].to_hf(*(ours[n].detach() for n in rules[i].ours))
                       .contiguous().cpu() for i in members}
        save_file(tensors, os.path.join(path, name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
        del tensors
    stale = os.path.join(path, INDEX_NAME)
    if len(shards) == 1:
        if os.path.exists(stale):
            os.remove(stale)
    else:
        index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
        with open(stale, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    return [os.path.join(path, n) for n in names]
