"""Rotary position embeddings (Su et al. 2021) and the context-extension scalings of the
LLaMA family, as Hugging Face ``transformers`` defines them (``modeling_rope_utils``).

Every kind changes only the inverse frequencies ``inv_freq[i]`` (``i = 0 .. d/2-1``, ``d`` the
head dimension, ``theta`` the base); the cos/sin tables are ``cos(p * inv_freq)`` for position
``p`` and the attention scale is unchanged:

- ``default``: ``inv_freq[i] = theta ** (-2i/d)``.
- ``linear`` (position interpolation, Chen et al. 2023): ``inv_freq / factor``.
- ``dynamic`` (dynamic NTK, bloc97 / emozilla 2023): for a sequence of ``s > L`` tokens
  (``L`` = ``original_max_seq_len``) the base grows to
  ``theta * (factor * s / L - (factor - 1)) ** (d / (d - 2))``; for ``s <= L`` it is the
  default. Ours is a function of the current length only; transformers caches the largest
  length seen so far, so the two agree on any call at least as long as every earlier one.
- ``llama3`` (Llama 3.1, Meta 2024): with ``lambda_i = 2*pi / inv_freq[i]`` and the
  pretraining context ``L``: ``lambda_i < L / high_freq_factor`` keeps ``inv_freq``;
  ``lambda_i > L / low_freq_factor`` divides it by ``factor``; in between it is
  ``(1 - a) * inv_freq / factor + a * inv_freq`` with
  ``a = (L / lambda_i - low_freq_factor) / (high_freq_factor - low_freq_factor)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from torch import Tensor


class RopeType(str, enum.Enum):
    DEFAULT = "default"
    LINEAR = "linear"
    DYNAMIC = "dynamic"
    LLAMA3 = "llama3"


@dataclass(frozen=True)
class RopeScaling:
    """How inverse frequencies are scaled (module docstring). ``original_max_seq_len``: ``L``
    of ``dynamic`` and ``llama3``."""

    rope_type: RopeType = RopeType.DEFAULT
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_seq_len: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "rope_type", RopeType(self.rope_type))
        except ValueError:
            raise ValueError(f"rope_type: {self.rope_type!r} is not supported; accepted: "
                             f"{[t.value for t in RopeType]}") from None
        if self.rope_type is RopeType.DEFAULT:
            return
        if not isinstance(self.factor, (int, float)) or not self.factor >= 1.0:
            raise ValueError(f"rope_factor must be a number >= 1 for rope_type "
                             f"{self.rope_type.value!r}, got {self.factor!r}")
        if self.rope_type in (RopeType.DYNAMIC, RopeType.LLAMA3) and not (
                isinstance(self.original_max_seq_len, int) and self.original_max_seq_len >= 1):
            raise ValueError(f"rope_original_max_seq_len must be an integer >= 1 for rope_type "
                             f"{self.rope_type.value!r}, got {self.original_max_seq_len!r}")
        if self.rope_type is RopeType.LLAMA3 and not (
                0 < self.low_freq_factor < self.high_freq_factor):
            raise ValueError(f"rope_low_freq_factor / rope_high_freq_factor must satisfy "
                             f"0 < low < high, got {self.low_freq_factor!r} / "
                             f"{self.high_freq_factor!r}")


def _base_inv_freq(head_dim: int, theta: float, device) -> Tensor:
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim
    return 1.0 / (theta ** exponent)


def inv_freq(head_dim: int, theta: float, seq: int, scaling: RopeScaling | None = None,
             device=None) -> Tensor:
    """float32 inverse frequencies ``[head_dim // 2]`` for a sequence of ``seq`` tokens."""
    kind = RopeType.DEFAULT if scaling is None else scaling.rope_type
    if kind is RopeType.DEFAULT:
        return _base_inv_freq(head_dim, theta, device)
    factor = float(scaling.factor)
    if kind is RopeType.LINEAR:
        return _base_inv_freq(head_dim, theta, device) / factor
    if kind is RopeType.DYNAMIC:
        length = scaling.original_max_seq_len
        s = max(seq, length)
        base = theta * (factor * s / length - (factor - 1)) ** (head_dim / (head_dim - 2))
        return _base_inv_freq(head_dim, base, device)
    # llama3
    freq = _base_inv_freq(head_dim, theta, device)
    length = scaling.original_max_seq_len
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    wavelen = 2 * math.pi / freq
    long = torch.where(wavelen > length / low, freq / factor, freq)
    smooth = (length / wavelen - low) / (high - low)
    mixed = (1 - smooth) * long / factor + smooth * long
    medium = (wavelen >= length / high) & (wavelen <= length / low)
    return torch.where(medium, mixed, long)


def rope_cos_sin(seq: int, head_dim: int, theta: float, device, dtype,
                 scaling: RopeScaling | None = None) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``[seq, head_dim]`` for positions ``0..seq-1`` (HF layout: the
    frequencies repeated twice), computed in float32 and cast to ``dtype``."""
    freq = inv_freq(head_dim, theta, seq, scaling, device)
    pos = torch.arange(seq, device=device, dtype=torch.float32)
    freqs = torch.outer(pos, freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
