"""Model profiles: per layer type compute time and memory as the cost model consumes them.

A :class:`ModelProfile` describes one model at one sequence length and precision. It comes
from the analytic model spec (:func:`model_profile`), from measurements (``galvatron profile
model``) or from Galvatron-2's profile files (:meth:`ModelProfile.from_galvatron`). All tables
are keyed by the shard degree ``d = tp * sp`` (powers of two), per sample of a micro-batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from galvatron import _C
from galvatron._io import atomic_write_text, load_json

MODEL_FORMAT_VERSION = 1
SP_KINDS = ("none", "megatron", "ulysses")


def _table(d: dict[int, Any], what: str) -> list[Any]:
    """{1: a, 2: b, 4: c} -> [a, b, c]; degrees must be consecutive powers of two from 1."""
    out = []
    deg = 1
    while deg in d:
        out.append(d[deg])
        deg *= 2
    extra = sorted(set(d) - {2**i for i in range(len(out))})
    if extra:
        raise ValueError(f"{what}: degrees {extra} are not consecutive powers of two starting at 1")
    return out


def _int_keys(d: Any, what: str) -> dict[int, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be an object keyed by degree")
    try:
        return {int(k): v for k, v in d.items()}
    except ValueError:
        raise ValueError(f"{what}: keys must be integer degrees, got {sorted(d)}") from None


@dataclass
class LayerTypeProfile:
    """Cost inputs of one layer type. Tables: degree -> value, per sample."""

    name: str
    param_count: int
    carry_bytes_per_sample: int  # the layer's input tensor (compute dtype)
    seq_len: int
    num_heads: int = 1
    num_kv_heads: int = 1
    tp_collectives: int = 2
    ulysses_bytes_per_sample: int = 0
    fwd_ms_per_sample: dict[int, float] = field(default_factory=dict)
    bwd_ms_per_sample: dict[int, float] = field(default_factory=dict)
    fwd_ms_fixed: float = 0.0
    bwd_ms_fixed: float = 0.0
    act_bytes_per_sample: dict[str, dict[int, int]] = field(default_factory=dict)  # sp kind -> degree -> bytes
    sequence_parallel: bool = True  # False: the layer needs the whole sequence (Swin's windows)
    # Selective checkpointing (empty: the search does not offer it for this layer type): bytes
    # kept per sample (input + matmul / fused-attention outputs) per sp kind and degree, and
    # the compute time of what it recomputes in backward.
    selective_act_bytes_per_sample: dict[str, dict[int, int]] = field(default_factory=dict)
    selective_recompute_ms_per_sample: dict[int, float] = field(default_factory=dict)

    def to_c(self) -> Any:
        t = _C.LayerTypeProfile()
        t.name, t.param_count, t.carry_bytes_per_sample = self.name, self.param_count, self.carry_bytes_per_sample
        t.num_heads, t.num_kv_heads, t.tp_collectives = self.num_heads, self.num_kv_heads, self.tp_collectives
        t.ulysses_bytes_per_sample, t.seq_len = self.ulysses_bytes_per_sample, self.seq_len
        t.allow_sequence_parallel = bool(self.sequence_parallel)
        t.fwd_ms_per_sample = _table(self.fwd_ms_per_sample, f"{self.name}.fwd_ms_per_sample")
        t.bwd_ms_per_sample = _table(self.bwd_ms_per_sample, f"{self.name}.bwd_ms_per_sample")
        t.fwd_ms_fixed, t.bwd_ms_fixed = self.fwd_ms_fixed, self.bwd_ms_fixed
        t.act_bytes_per_sample = [
            [int(v) for v in _table(self.act_bytes_per_sample.get(k, {}), f"{self.name}.act_bytes_per_sample.{k}")]
            for k in SP_KINDS
        ]
        if self.selective_act_bytes_per_sample or self.selective_recompute_ms_per_sample:
            t.selective_act_bytes_per_sample = [
                [int(v) for v in _table(self.selective_act_bytes_per_sample.get(k, {}),
                                        f"{self.name}.selective_act_bytes_per_sample.{k}")]
                for k in SP_KINDS
            ]
            t.selective_recompute_ms_per_sample = _table(
                self.selective_recompute_ms_per_sample, f"{self.name}.selective_recompute_ms_per_sample")
        return t


@dataclass
class EmbeddingProfile:
    """Embedding (first stage) and head + loss (last stage), which share one strategy."""

    embed_param_count: int
    head_param_count: int  # excluding a tied weight
    tied_param_count: int
    carry_bytes_per_sample: int
    seq_len: int
    embed_fwd_ms_per_sample: dict[int, float] = field(default_factory=dict)
    embed_bwd_ms_per_sample: dict[int, float] = field(default_factory=dict)
    head_fwd_ms_per_sample: dict[int, float] = field(default_factory=dict)
    head_bwd_ms_per_sample: dict[int, float] = field(default_factory=dict)
    embed_act_bytes_per_sample: dict[int, int] = field(default_factory=dict)
    head_act_bytes_per_sample: dict[int, int] = field(default_factory=dict)

    def to_c(self) -> Any:
        e = _C.EmbeddingProfile()
        e.embed_param_count, e.head_param_count = self.embed_param_count, self.head_param_count
        e.tied_param_count, e.carry_bytes_per_sample = self.tied_param_count, self.carry_bytes_per_sample
        e.seq_len = self.seq_len
        for name in ("embed_fwd_ms_per_sample", "embed_bwd_ms_per_sample", "head_fwd_ms_per_sample",
                     "head_bwd_ms_per_sample", "embed_act_bytes_per_sample", "head_act_bytes_per_sample"):
            setattr(e, name, _table(getattr(self, name), f"embedding.{name}"))
        return e


@dataclass
class ModelProfile:
    """A model at one sequence length and precision, as the search sees it."""

    model: str
    seq_len: int
    layer_types: list[LayerTypeProfile]
    layer_type_of: list[int]
    embedding: EmbeddingProfile
    precision: str = "bf16"  # bf16 | fp16: fp32 master weights + 2-byte compute copies; fp32
    model_config: dict[str, Any] = field(default_factory=dict)
    source: str = "analytic"
    measurements: dict[str, Any] = field(default_factory=dict)  # profiler raw points; not used by the search

    @property
    def num_layers(self) -> int:
        return len(self.layer_type_of)

    def at_seq_len(self, seq_len: int) -> ModelProfile:
        """This (measured) profile at another sequence length, fitted from the lengths it was
        measured at (see :mod:`galvatron.profiles.seq_scaling`)."""
        from galvatron.profiles.seq_scaling import at_seq_len

        return at_seq_len(self, seq_len)

    def to_tables(self) -> Any:
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision: {self.precision!r} is not accepted; accepted: 'bf16', 'fp16', 'fp32'")
        t = _C.ModelTables()
        t.layer_types = [lt.to_c() for lt in self.layer_types]
        t.layer_type_of = list(self.layer_type_of)
        t.embedding = self.embedding.to_c()
        t.compute_bytes = 4 if self.precision == "fp32" else 2
        t.mixed_precision = self.precision != "fp32"
        _C.validate_model(t)
        return t

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        def conv(x: Any) -> Any:
            if isinstance(x, dict):
                return {str(k): conv(v) for k, v in x.items()}
            if isinstance(x, list):
                return [conv(v) for v in x]
            return x

        d = conv(dataclasses.asdict(self))
        return {"version": MODEL_FORMAT_VERSION, "kind": "model", **d}

    @classmethod
    def from_dict(cls, d: Any) -> ModelProfile:
        if not isinstance(d, dict):
            raise ValueError("a model profile must be a JSON object")
        if d.get("kind") != "model":
            raise ValueError(f"kind: expected 'model', got {d.get('kind')!r}")
        if d.get("version") != MODEL_FORMAT_VERSION:
            raise ValueError(f"version: {d.get('version')!r} is not supported; accepted: {MODEL_FORMAT_VERSION}")
        try:
            lts = [_layer_type_from_dict(x, f"layer_types[{i}]") for i, x in enumerate(d["layer_types"])]
            emb = _embedding_from_dict(d["embedding"])
            prof = cls(model=str(d["model"]), seq_len=int(d["seq_len"]), layer_types=lts,
                       layer_type_of=[int(x) for x in d["layer_type_of"]], embedding=emb,
                       precision=str(d.get("precision", "bf16")), model_config=dict(d.get("model_config", {})),
                       source=str(d.get("source", "measured")),
                       measurements=dict(d.get("measurements", {})))
        except KeyError as e:
            raise ValueError(f"missing key {e.args[0]!r}") from None
        except (TypeError, AttributeError) as e:
            raise ValueError(f"malformed model profile: {e}") from None
        prof.to_tables()  # validates the tables
        return prof

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelProfile:
        return load_json(path, cls.from_dict, "model profile")

    @classmethod
    def from_galvatron(cls, computation_json: str | os.PathLike[str], memory_json: str | os.PathLike[str],
                       seq_len: int, model: str = "galvatron-model", num_layers: int | None = None,
                       num_heads: int | None = None, hidden_size: int | None = None,
                       precision: str = "bf16") -> ModelProfile:
        """Import Galvatron-2's computation and memory profiles (see galvatron_import)."""
        from galvatron.profiles.galvatron_import import model_from_galvatron

        return model_from_galvatron(computation_json, memory_json, seq_len, model, num_layers, num_heads,
                                    hidden_size, precision)


def _layer_type_from_dict(x: Any, where: str) -> LayerTypeProfile:
    if not isinstance(x, dict):
        raise ValueError(f"{where} must be an object")
    kw = dict(x)
    for k in ("fwd_ms_per_sample", "bwd_ms_per_sample"):
        kw[k] = {d: float(v) for d, v in _int_keys(kw.get(k, {}), f"{where}.{k}").items()}
    kw["selective_recompute_ms_per_sample"] = {
        d: float(v) for d, v in _int_keys(kw.get("selective_recompute_ms_per_sample", {}),
                                          f"{where}.selective_recompute_ms_per_sample").items()}
    for key in ("act_bytes_per_sample", "selective_act_bytes_per_sample"):
        acts = kw.get(key, {})
        if not isinstance(acts, dict) or set(acts) - set(SP_KINDS):
            raise ValueError(f"{where}.{key}: keys must be among {SP_KINDS}")
        kw[key] = {k: {d: int(v) for d, v in _int_keys(t, f"{where}.{key}.{k}").items()}
                   for k, t in acts.items()}
    try:
        return LayerTypeProfile(**kw)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def _embedding_from_dict(x: Any) -> EmbeddingProfile:
    if not isinstance(x, dict):
        raise ValueError("embedding must be an object")
    kw = dict(x)
    for k in ("embed_fwd_ms_per_sample", "embed_bwd_ms_per_sample", "head_fwd_ms_per_sample", "head_bwd_ms_per_sample"):
        kw[k] = {d: float(v) for d, v in _int_keys(kw.get(k, {}), f"embedding.{k}").items()}
    for k in ("embed_act_bytes_per_sample", "head_act_bytes_per_sample"):
        kw[k] = {d: int(v) for d, v in _int_keys(kw.get(k, {}), f"embedding.{k}").items()}
    try:
        return EmbeddingProfile(**kw)
    except TypeError as e:
        raise ValueError(f"embedding: {e}") from None
