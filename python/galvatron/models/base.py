"""What every model family shares: the config base class, the carry, the model base class.

The model contract (the runtime and the search rely on it)::

    model.embed(batch: dict) -> Carry      # input part
    model.layers: nn.ModuleList            # typed layers, Carry -> Carry, each has .layer_type
    model.head(carry) -> logits
    model(**inputs) == model.head(run layers over model.embed(inputs))

The model code knows nothing about parallelism.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from galvatron.models.layers import AttnBackend
from galvatron.plan import _enum_value, _positive_int

# ---------------------------------------------------------------------------- config


def check_positive(cfg: Any, *names: str) -> None:
    """Each named config field must be an integer >= 1 (ValueError naming the field)."""
    for n in names:
        _positive_int(getattr(cfg, n), n)


def check_divides(cfg: Any, divisor: str, dividend: str) -> None:
    a, b = getattr(cfg, divisor), getattr(cfg, dividend)
    if b % a != 0:
        raise ValueError(f"{divisor}={a} must divide {dividend}={b}")


@dataclass(frozen=True)
class ModelConfig:
    """Fields every family has. Families subclass it (all fields have defaults: the debug
    flavour) and override :meth:`validate`."""

    family: ClassVar[str] = ""
    name: str = "custom"
    attn_backend: AttnBackend = AttnBackend.AUTO
    initializer_range: float = 0.02
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "attn_backend", _enum_value(AttnBackend, self.attn_backend, "attn_backend")
        )
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with some fields changed; unknown field names raise ValueError."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(
                f"unknown config field(s) {unknown} for {type(self).__name__}; accepted: {known}"
            )
        return dataclasses.replace(self, **overrides)


# ---------------------------------------------------------------------------- carry


@dataclass
class Carry:
    """What flows between layers. Tensors only, so a pipeline stage can send it.

    - ``hidden``: ``[batch, seq, hidden]`` -- the stream the current layer transforms.
    - ``mask``: ``[batch, seq]`` padding mask of ``hidden`` (nonzero = real token) or None.
      Masks are never sequence-sharded: they always cover the full sequence.
    - ``memory`` / ``memory_mask``: a second stream. T5 only: during encoder layers it holds
      the embedded decoder inputs, and after the last encoder layer (which swaps the two
      streams) it holds the final encoder output that decoder layers cross-attend to.

    ``to_tuple()``/``from_tuple()`` give a flat tuple of tensors (absent fields as empty
    tensors) for point-to-point sends.
    """

    hidden: Tensor
    mask: Tensor | None = None
    memory: Tensor | None = None
    memory_mask: Tensor | None = None

    def to_tuple(self) -> tuple[Tensor, ...]:
        empty = self.hidden.new_empty(0)
        fields = (self.hidden, self.mask, self.memory, self.memory_mask)
        return tuple(empty if t is None else t for t in fields)

    @classmethod
    def from_tuple(cls, tensors: tuple[Tensor, ...]) -> Carry:
        return cls(*(None if t.numel() == 0 else t for t in tensors))


# ---------------------------------------------------------------------------- model


def _param_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class GalvatronModel(nn.Module):
    """Base class: ``embed`` -> ``layers`` -> ``head``. Subclasses build the three parts."""

    config: ModelConfig
    input_names: ClassVar[tuple[str, ...]] = ()
    # Encoder-decoder models: the input names (ids, padding mask) of the second stream that
    # ``embed`` puts in ``Carry.memory`` / ``Carry.memory_mask``; None for one-stream models.
    memory_inputs: ClassVar[tuple[str, str] | None] = None
    embed: nn.Module
    layers: nn.ModuleList
    head: nn.Module

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, **inputs: Tensor) -> Tensor:
        unknown = sorted(set(inputs) - set(self.input_names) - {"labels"})
        if unknown:
            raise ValueError(
                f"unknown input(s) {unknown} for {type(self).__name__}; accepted: "
                f"{list(self.input_names)}"
            )
        carry = self.embed(inputs)
        for layer in self.layers:
            carry = layer(carry)
        return self.head(carry)

    def memory_ids(self, batch: dict[str, Tensor]) -> Tensor:
        """Encoder-decoder models: the second stream's ids of ``batch``."""
        if self.memory_inputs is None:
            raise ValueError(f"{type(self).__name__} has no second stream")
        return batch[self.memory_inputs[0]]

    def layer_types(self) -> list[str]:
        return [layer.layer_type for layer in self.layers]

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """Mean cross-entropy over ``batch['labels']`` (ignore_index=-100). Causal LMs shift
        the labels by one inside, like Hugging Face (labels may equal input_ids)."""
        labels = batch["labels"]
        if getattr(self, "shift_labels", False):
            labels = F.pad(labels, (0, 1), value=-100)[..., 1:]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
        )

    def record_ties(self) -> None:
        """Remember which parameters are shared; families call it at the end of ``__init__``,
        so the ties stay known after ``to_empty`` on a part has broken them."""
        self._ties = tied_names(self)

    def retie(self) -> None:
        """Share tied parameters again after ``to_empty`` (which gives every module its own
        tensor). Where only one side was materialised, that side is shared."""
        for owner, alias in self._ties:
            a, b = self.get_parameter(owner), self.get_parameter(alias)
            keep = b if a.is_meta else a
            for name in (owner, alias):
                mod_name, _, leaf = name.rpartition(".")
                setattr(self.get_submodule(mod_name), leaf, keep)

    def tied_parameters(self) -> list[tuple[str, str]]:
        """Pairs ``(owner, alias)`` of parameter names that are one tensor in the built model.
        The owner is the name used for initialisation and checkpoints; a runtime that places
        the two on different ranks must keep them equal (sum their gradients)."""
        return list(self._ties)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Initialise every (non-meta) parameter from a generator seeded by (seed, name).

        Any subset of layers is thus initialised identically on any rank. Tied aliases use
        their owner's name. Rules: norm weights 1, biases 0, other tensors
        N(0, initializer_range) -- families may refine via :meth:`_init_param`.
        """
        alias_to_owner = {alias: owner for owner, alias in self.tied_parameters()}
        done: set[int] = set()
        for name, p in self.named_parameters(remove_duplicate=False):
            if p.is_meta or id(p) in done:
                continue
            done.add(id(p))
            key = alias_to_owner.get(name, name)  # a tie broken by to_empty: owner's values
            gen = torch.Generator().manual_seed(_param_seed(seed, key))
            value = self._init_param(key, tuple(p.shape), gen)
            p.copy_(value.to(dtype=p.dtype, device=p.device))

    def _init_param(self, name: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "bias":
            return torch.zeros(shape)
        if len(shape) == 1 and "norm" in name:
            return torch.ones(shape)
        return torch.randn(shape, generator=gen) * self.config.initializer_range


def tied_names(model: nn.Module) -> list[tuple[str, str]]:
    """(first name, other name) for every parameter registered under several names."""
    first: dict[int, str] = {}
    pairs = []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            pairs.append((first[id(p)], name))
        else:
            first[id(p)] = name
    return pairs


@dataclass(frozen=True)
class Family:
    """Registry entry of one model family (see ``galvatron.models.__init__``)."""

    name: str
    config_cls: type[ModelConfig]
    model_cls: type[GalvatronModel]
    flavours: dict[str, ModelConfig]
    spec: Any  # Callable[[config], ModelSpec]
    hf: Any = None  # galvatron.models.hf.HFAdapter
    # other spellings accepted for a flavour: alias -> flavour name (``galvatron.models.aliases``)
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)
