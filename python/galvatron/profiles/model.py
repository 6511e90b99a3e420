"""Model profiles: per layer type compute time and memory as the cost model consumes them.

A :class:`ModelProfile` describes one model at one sequence length and precision. It comes
from the analytic model spec (:func:`model_profile`), from measurements (``galvatron profile
model``) or from Galvatron-2's profile files (:func:`galvatron.profiles.model_from_galvatron`). All
tables are keyed by the shard degree ``d = tp * sp`` (any positive integers; the core uses a
degree only where the profile has it), per sample of a micro-batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from galvatron import _C
from galvatron._core_convert import model_tables
from galvatron._io import atomic_write_text, load_json
from galvatron._validate import (
    MAX_BYTES_PER_SAMPLE,
    MAX_LAYERS,
    MAX_MS,
    MAX_PARAMS,
    MAX_SEQ_LEN,
    check_bool,
    check_dict,
    check_float,
    check_int,
    check_list,
    check_str,
    short,
)
from galvatron.plan import SpKind

MODEL_FORMAT_VERSION = 1
SP_KINDS = tuple(k.value for k in SpKind)  # keys of the per-sp-kind tables: "none", "megatron", "ulysses"


def _int_keys(d: Any, what: str) -> dict[int, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be an object keyed by degree")
    out = {}
    for k, v in d.items():
        if isinstance(k, bool) or not (isinstance(k, int) or (isinstance(k, str) and k.isdigit() and len(k) <= 6)):
            raise ValueError(f"{what}: keys must be integer degrees, got {short(k)}")
        deg = int(k)
        if deg < 1:  # the message _degrees gives for tables built in Python
            raise ValueError(f"{what}: degrees [{deg}] are not positive integers")
        if deg > 2**20:
            raise ValueError(f"{what}: degree {deg} is out of range; accepted: 1 to {2**20}")
        out[deg] = v
    return out


def _ms_table(t: Any, what: str) -> dict[int, float]:
    return {d: check_float(v, f"{what}[{d}]", 0.0, MAX_MS) for d, v in _int_keys(t, what).items()}


def _bytes_table(t: Any, what: str) -> dict[int, int]:
    return {d: check_int(v, f"{what}[{d}]", 0, MAX_BYTES_PER_SAMPLE) for d, v in _int_keys(t, what).items()}


def _check_layer_type(lt: Any, where: str) -> None:
    if not isinstance(lt, LayerTypeProfile):
        raise ValueError(f"{where} must be a LayerTypeProfile")
    check_str(lt.name, f"{where}.name", 256)
    check_int(lt.param_count, f"{where}.param_count", 0, MAX_PARAMS)
    check_int(lt.carry_bytes_per_sample, f"{where}.carry_bytes_per_sample", 1, MAX_BYTES_PER_SAMPLE)
    check_int(lt.seq_len, f"{where}.seq_len", 1, MAX_SEQ_LEN)
    check_int(lt.num_heads, f"{where}.num_heads", 1, 2**20)
    check_int(lt.num_kv_heads, f"{where}.num_kv_heads", 1, 2**20)
    check_int(lt.tp_collectives, f"{where}.tp_collectives", 0, 64)
    check_int(lt.ulysses_bytes_per_sample, f"{where}.ulysses_bytes_per_sample", 0, MAX_BYTES_PER_SAMPLE)
    check_float(lt.fwd_ms_fixed, f"{where}.fwd_ms_fixed", 0.0, MAX_MS)
    check_float(lt.bwd_ms_fixed, f"{where}.bwd_ms_fixed", 0.0, MAX_MS)
    check_bool(lt.allow_sequence_parallel, f"{where}.allow_sequence_parallel")
    _ms_table(lt.fwd_ms_per_sample, f"{where}.fwd_ms_per_sample")
    _ms_table(lt.bwd_ms_per_sample, f"{where}.bwd_ms_per_sample")
    check_int(lt.fsdp_carry_bytes_per_sample, f"{where}.fsdp_carry_bytes_per_sample", 0, MAX_BYTES_PER_SAMPLE)
    for key in ("act_bytes_per_sample", "selective_act_bytes_per_sample", "fsdp_act_bytes_per_sample",
                "fsdp_selective_act_bytes_per_sample"):
        acts = check_dict(getattr(lt, key), f"{where}.{key}")
        if set(acts) - set(SP_KINDS):
            raise ValueError(f"{where}.{key}: keys must be among {SP_KINDS}")
        for k, t in acts.items():
            _bytes_table(t, f"{where}.{key}.{k}")
    _ms_table(lt.selective_recompute_ms_per_sample, f"{where}.selective_recompute_ms_per_sample")


def _check_embedding(e: Any) -> None:
    if not isinstance(e, EmbeddingProfile):
        raise ValueError("embedding must be an EmbeddingProfile")
    for name in ("embed_param_count", "head_param_count", "tied_param_count"):
        check_int(getattr(e, name), f"embedding.{name}", 0, MAX_PARAMS)
    check_int(e.carry_bytes_per_sample, "embedding.carry_bytes_per_sample", 1, MAX_BYTES_PER_SAMPLE)
    check_int(e.seq_len, "embedding.seq_len", 1, MAX_SEQ_LEN)
    for name in ("embed_fwd_ms_per_sample", "embed_bwd_ms_per_sample", "head_fwd_ms_per_sample",
                 "head_bwd_ms_per_sample"):
        _ms_table(getattr(e, name), f"embedding.{name}")
    for name in ("embed_act_bytes_per_sample", "head_act_bytes_per_sample", "head_transient_bytes_per_sample"):
        _bytes_table(getattr(e, name), f"embedding.{name}")


def check_model_profile(p: ModelProfile) -> None:
    """Type and range of every field the search reads (``ValueError`` naming the field): a
    parameter count of 2**70, a time of 1e300 or NaN, a sequence length of 0 are refused here,
    before the C++ core sees them."""
    check_str(p.model, "model", 256)
    check_int(p.seq_len, "seq_len", 1, MAX_SEQ_LEN)
    if p.precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision: {short(p.precision)} is not accepted; accepted: 'bf16', 'fp16', 'fp32'")
    lts = check_list(p.layer_types, "layer_types", 10_000)
    for i, lt in enumerate(lts):
        _check_layer_type(lt, f"layer_types[{i}]")
    for i, t in enumerate(check_list(p.layer_type_of, "layer_type_of", MAX_LAYERS)):
        check_int(t, f"layer_type_of[{i}]", 0, max(0, len(lts) - 1))
    _check_embedding(p.embedding)
    check_dict(p.model_config, "model_config")
    check_str(p.source, "source", 256)
    check_dict(p.measurements, "measurements")


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
    # False: the layer needs the whole sequence (Swin's windows): no Megatron-SP, no Ulysses.
    # JSON files written before the rename call it "sequence_parallel" (still read).
    allow_sequence_parallel: bool = True
    # Selective checkpointing (empty: the search does not offer it for this layer type): bytes
    # kept per sample (input + matmul / fused-attention outputs) per sp kind and degree, and
    # the compute time of what it recomputes in backward.
    selective_act_bytes_per_sample: dict[str, dict[int, int]] = field(default_factory=dict)
    selective_recompute_ms_per_sample: dict[int, float] = field(default_factory=dict)
    # Mixed precision, ZeRO-2/3 units (FSDP2 casts their input and gathers compute-dtype
    # parameters: the whole layer runs in the compute dtype); empty / 0: as the tables above.
    fsdp_act_bytes_per_sample: dict[str, dict[int, int]] = field(default_factory=dict)
    fsdp_selective_act_bytes_per_sample: dict[str, dict[int, int]] = field(default_factory=dict)
    fsdp_carry_bytes_per_sample: int = 0


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
    # the loss's working memory beyond what it keeps (fp32 logits and gradients); {}: none
    head_transient_bytes_per_sample: dict[int, int] = field(default_factory=dict)


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
        """The core's ``ModelTables``: every field checked, converted
        (:func:`galvatron._core_convert.model_tables`), then validated by the core."""
        check_model_profile(self)
        t = model_tables(self)
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
            raise ValueError(f"kind: expected 'model', got {short(d.get('kind'))}")
        if d.get("version") != MODEL_FORMAT_VERSION:
            raise ValueError(f"version: {short(d.get('version'))} is not supported; accepted: {MODEL_FORMAT_VERSION}")
        for key in ("model", "seq_len", "layer_types", "layer_type_of", "embedding"):
            if key not in d:
                raise ValueError(f"missing key {key!r}")
        known = {f.name for f in dataclasses.fields(cls)} | {"version", "kind"}
        unknown = sorted(k for k in d if k not in known)
        if unknown:
            raise ValueError(f"unknown keys {[k[:40] for k in unknown[:5]]}; accepted: {sorted(known)}")
        lts = [_layer_type_from_dict(x, f"layer_types[{i}]")
               for i, x in enumerate(check_list(d["layer_types"], "layer_types", 10_000))]
        emb = _embedding_from_dict(d["embedding"])
        prof = cls(model=d["model"], seq_len=d["seq_len"], layer_types=lts,
                   layer_type_of=check_list(d["layer_type_of"], "layer_type_of", MAX_LAYERS), embedding=emb,
                   precision=d.get("precision", "bf16"), model_config=d.get("model_config", {}),
                   source=d.get("source", "measured"), measurements=d.get("measurements", {}))
        prof.to_tables()  # validates every field, then the tables (C++)
        return prof

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ModelProfile:
        return load_json(path, cls.from_dict, "model profile")



_OLD_SEQUENCE_PARALLEL_KEY = "sequence_parallel"  # allow_sequence_parallel's JSON name until 2026-12


def _layer_type_from_dict(x: Any, where: str) -> LayerTypeProfile:
    if not isinstance(x, dict):
        raise ValueError(f"{where} must be an object")
    known = {f.name for f in dataclasses.fields(LayerTypeProfile)}
    unknown = sorted(k for k in x if k not in known | {_OLD_SEQUENCE_PARALLEL_KEY})
    if unknown:
        raise ValueError(f"{where}: unknown keys {[k[:40] for k in unknown[:5]]}; accepted: {sorted(known)}")
    for key in ("name", "param_count", "carry_bytes_per_sample", "seq_len"):
        if key not in x:
            raise ValueError(f"{where}: missing key {key!r}")
    kw = dict(x)
    if _OLD_SEQUENCE_PARALLEL_KEY in kw:  # the field's name before it matched the core's
        if "allow_sequence_parallel" in kw:
            raise ValueError(f"{where}: give allow_sequence_parallel or its old name "
                             f"{_OLD_SEQUENCE_PARALLEL_KEY}, not both")
        kw["allow_sequence_parallel"] = kw.pop(_OLD_SEQUENCE_PARALLEL_KEY)
    for k in ("fwd_ms_per_sample", "bwd_ms_per_sample"):
        kw[k] = _ms_table(kw.get(k, {}), f"{where}.{k}")
    kw["selective_recompute_ms_per_sample"] = _ms_table(kw.get("selective_recompute_ms_per_sample", {}),
                                                        f"{where}.selective_recompute_ms_per_sample")
    for key in ("act_bytes_per_sample", "selective_act_bytes_per_sample", "fsdp_act_bytes_per_sample",
                "fsdp_selective_act_bytes_per_sample"):
        acts = kw.get(key, {})
        if not isinstance(acts, dict) or set(acts) - set(SP_KINDS):
            raise ValueError(f"{where}.{key}: keys must be among {SP_KINDS}")
        kw[key] = {k: _bytes_table(t, f"{where}.{key}.{k}") for k, t in acts.items()}
    lt = LayerTypeProfile(**kw)
    _check_layer_type(lt, where)
    return lt


def _embedding_from_dict(x: Any) -> EmbeddingProfile:
    if not isinstance(x, dict):
        raise ValueError("embedding must be an object")
    known = {f.name for f in dataclasses.fields(EmbeddingProfile)}
    unknown = sorted(k for k in x if k not in known)
    if unknown:
        raise ValueError(f"embedding: unknown keys {[k[:40] for k in unknown[:5]]}; accepted: {sorted(known)}")
    for key in ("embed_param_count", "head_param_count", "tied_param_count", "carry_bytes_per_sample", "seq_len"):
        if key not in x:
            raise ValueError(f"embedding: missing key {key!r}")
    kw = dict(x)
    for k in ("embed_fwd_ms_per_sample", "embed_bwd_ms_per_sample", "head_fwd_ms_per_sample", "head_bwd_ms_per_sample"):
        kw[k] = _ms_table(kw.get(k, {}), f"embedding.{k}")
    for k in ("embed_act_bytes_per_sample", "head_act_bytes_per_sample", "head_transient_bytes_per_sample"):
        kw[k] = _bytes_table(kw.get(k, {}), f"embedding.{k}")
    e = EmbeddingProfile(**kw)
    _check_embedding(e)
    return e
