"""Model zoo: GPT-2, LLaMA/Mistral, BERT, T5, ViT, Swin as embed -> typed layers -> head.

Public API::

    galvatron.models.list(aliases=False) -> list[str]         # flavour names (and aliases)
    galvatron.models.aliases() -> dict[str, str]              # alias -> flavour name
    galvatron.models.get_config(name, **overrides) -> config  # no allocation; aliases accepted
    galvatron.models.build(name_or_config, seed=None, device=None, **overrides) -> model
    galvatron.models.spec(name_or_config, **overrides) -> ModelSpec
    galvatron.models.from_hf(hf_model) / to_hf(model)         # extra "hf"
    galvatron.models.load_hf_checkpoint(dir, layer_indices=None, include_embedding=True,
                                        include_head=True, device="cpu")
    galvatron.models.save_hf_checkpoint(model, dir, max_shard_bytes=5 GiB)  # HF layout, sharded

Every model (``GalvatronModel``): ``embed(batch) -> Carry``, ``layers`` (each with
``layer_type``, ``Carry -> Carry``), ``head(carry) -> logits``, ``forward(**hf_inputs)``,
``layer_types()``, ``loss(logits, batch)``, ``tied_parameters()``, ``retie()``,
``init_weights(seed)``. The carry per family is documented in each family's module docstring.
Encoder-decoder models (T5) also name their second stream's inputs (``memory_inputs``), give
its ids for a batch (``memory_ids(batch)``), and mark the layer that swaps the two streams
(``swaps_streams``).

Every flavour has one name; a few have an alias (another common spelling, e.g. ``gpt2`` for
``gpt2-small``), accepted wherever a name is and resolved to the flavour.

Files: ``base.py`` (config/model base, Carry, the family registry entry), ``layers.py``
(layers several families share: attention with ``core``, MLPs, RMSNorm, masks, RoPE, the
pre-norm block, the LM head, patch embedding), ``rope.py`` (RoPE tables and scaling: linear,
dynamic NTK, llama3), ``spec.py`` (ModelSpec: params, FLOPs, activation bytes; the specs of the
shared layers), ``hf.py`` (Hugging Face mapping machinery, checkpoint loading and sharded
saving), one file per family: ``gpt2.py``, ``llama.py``, ``bert.py``, ``t5.py``, ``vit.py``,
``swin.py``, each in three headed sections: the model (config, flavours, modules), its spec
(for the cost model) and its Hugging Face mapping.
"""

from __future__ import annotations

import builtins
from typing import Any

import torch

from galvatron.models import bert, gpt2, llama, swin, t5, vit
from galvatron.models import hf as _hf
from galvatron.models.base import Carry, Family, GalvatronModel, ModelConfig
from galvatron.models.layers import Activation, AttnBackend
from galvatron.models.spec import LayerTypeSpec, ModelSpec, SavedTensor

FAMILIES: dict[str, Family] = {f.name: f for f in (gpt2.FAMILY, llama.FAMILY, bert.FAMILY, vit.FAMILY,
                                              swin.FAMILY, t5.FAMILY)}
_FLAVOURS: dict[str, Family] = {n: f for f in FAMILIES.values() for n in f.flavours}
_ALIASES: dict[str, str] = {a: n for f in FAMILIES.values() for a, n in f.aliases.items()}


def list(aliases: bool = False) -> builtins.list[str]:  # noqa: A001 - the requested public name
    """Names of every flavour, e.g. ``gpt2-debug``, ``llama2-7b``; with ``aliases`` also the
    other accepted spellings (:func:`aliases`)."""
    return builtins.list(_FLAVOURS) + (builtins.list(_ALIASES) if aliases else [])


def aliases() -> dict[str, str]:
    """Other accepted spellings: alias -> flavour name (e.g. ``gpt2`` -> ``gpt2-small``)."""
    return dict(_ALIASES)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of flavour ``name`` (or of the flavour an alias names) with ``overrides``
    applied (validated, nothing built)."""
    name = _ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in _FLAVOURS:
        raise ValueError(f"model name {name!r} is unknown; accepted: {list()} "
                         f"(aliases: {_ALIASES})")
    cfg = _FLAVOURS[name].flavours[name]
    return cfg.replace(**overrides) if overrides else cfg


def build(
    name_or_config: str | ModelConfig,
    seed: int | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> GalvatronModel:
    """Build a model. Weights come from :meth:`GalvatronModel.init_weights` with ``seed``
    (default: one number drawn from torch's global generator, so ``torch.manual_seed``
    makes builds repeatable). ``device="meta"`` builds without allocating."""
    cfg = _as_config(name_or_config, overrides)
    with torch.device(device or "cpu"):
        model = FAMILIES[cfg.family].model_cls(cfg)
    if seed is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
    model.init_weights(seed)
    return model


def spec(name_or_config: str | ModelConfig, **overrides: Any) -> ModelSpec:
    """The analytic :class:`ModelSpec` (parameters, FLOPs, activation bytes per layer type)."""
    cfg = _as_config(name_or_config, overrides)
    return FAMILIES[cfg.family].spec(cfg)


def from_hf(hf_model: torch.nn.Module) -> GalvatronModel:
    """Our model with the weights of a ``transformers`` model (same config, copied tensors)."""
    return _hf.from_hf(hf_model, FAMILIES)


def to_hf(model: GalvatronModel) -> torch.nn.Module:
    """A ``transformers`` model with our weights (built on CPU from the converted config)."""
    return _hf.to_hf(model, FAMILIES)


def load_hf_checkpoint(path: Any, layer_indices: Any = None, include_embedding: bool = True,
                       include_head: bool = True, device: str | torch.device = "cpu") -> GalvatronModel:
    """Build our model from a local HF directory (``config.json`` + ``*.safetensors``, whole or
    sharded with ``model.safetensors.index.json``); with ``layer_indices`` and the ``include_*``
    flags only those parts are read and materialised, and only the shards holding them opened
    (see :func:`galvatron.models.hf.load_hf_checkpoint`)."""
    return _hf.load_hf_checkpoint(path, FAMILIES, layer_indices=layer_indices,
                                  include_embedding=include_embedding, include_head=include_head,
                                  device=device)


def save_hf_checkpoint(model: GalvatronModel, path: Any,
                       max_shard_bytes: int = 5 * 2**30) -> builtins.list[str]:
    """Write ``model`` as a Hugging Face checkpoint directory, sharded past ``max_shard_bytes``
    (see :func:`galvatron.models.hf.save_hf_checkpoint`); returns the weight files."""
    return _hf.save_hf_checkpoint(model, path, FAMILIES, max_shard_bytes=max_shard_bytes)


def _as_config(name_or_config: str | ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    if isinstance(name_or_config, ModelConfig):
        return name_or_config.replace(**overrides) if overrides else name_or_config
    return get_config(name_or_config, **overrides)


__all__ = [
    "Activation",
    "AttnBackend",
    "Carry",
    "FAMILIES",
    "GalvatronModel",
    "LayerTypeSpec",
    "ModelConfig",
    "ModelSpec",
    "SavedTensor",
    "aliases",
    "build",
    "from_hf",
    "get_config",
    "list",
    "load_hf_checkpoint",
    "save_hf_checkpoint",
    "spec",
    "to_hf",
]
