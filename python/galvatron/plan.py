"""The training plan: what every hybrid-parallel decision is, as typed dataclasses.

A :class:`Plan` is the single hand-off between the search and the runtime. It is saved as
versioned JSON (``plan.save`` / ``Plan.load``); files of either this format or Galvatron-2's
are read and written by :mod:`galvatron.plan_io` (mapping in :mod:`galvatron.galvatron_format`).

Mesh layout of one pipeline stage (``world_size // pp`` devices, ranks of stage ``s`` are
``s*per_stage ... (s+1)*per_stage-1``). Inside a stage a layer's devices form a
``dp x sp x tp`` grid; with ``tp_consecutive`` the tp axis is innermost (tp groups are adjacent
ranks), otherwise the dp axis is innermost. Example, 8 devices, pp=2, tp=2, dp=2,
tp_consecutive: stage 0 = ranks 0-3, tp groups {0,1} {2,3}, dp groups {0,2} {1,3}.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from galvatron._io import atomic_write_text as _atomic_write
from galvatron._io import load_json
from galvatron._validate import INT32_MAX, MAX_LAYERS, check_float, check_int, short

PLAN_FORMAT_VERSION = 1


class DpType(str, enum.Enum):
    """How the data-parallel replicas of a layer hold model states."""

    DDP = "ddp"  # full replicas, gradient all-reduce
    ZERO1 = "zero1"  # optimizer states sharded
    ZERO2 = "zero2"  # + gradients sharded
    ZERO3 = "zero3"  # + parameters sharded (FSDP)


class SpKind(str, enum.Enum):
    """Sequence parallelism of a layer."""

    NONE = "none"
    MEGATRON = "megatron"  # Megatron-SP: sequence sharded over the tp group outside attention/MLP
    ULYSSES = "ulysses"  # DeepSpeed-Ulysses: all-to-all between sequence and head sharding


class Schedule(str, enum.Enum):
    """Pipeline schedule."""

    GPIPE = "gpipe"
    ONE_F_ONE_B = "1f1b"
    INTERLEAVED_1F1B = "interleaved_1f1b"


class Checkpoint(str, enum.Enum):
    """Activation checkpointing of a layer.

    ``selective`` keeps the outputs of the matmuls (linear layers) and of the fused attention
    kernel and recomputes the rest (norms, activation functions, element-wise ops, the
    explicit-softmax attention path, and the collectives between them) in backward; ``full``
    keeps only the layer input. JSON ``false`` / ``true`` are read as ``none`` / ``full``.
    The truth value is "some checkpointing" (``bool(Checkpoint.NONE)`` is False).
    """

    NONE = "none"
    SELECTIVE = "selective"
    FULL = "full"

    def __bool__(self) -> bool:
        return self is not Checkpoint.NONE


def _checkpoint_value(value: Any, field_name: str) -> Checkpoint:
    if isinstance(value, bool):
        return Checkpoint.FULL if value else Checkpoint.NONE
    if isinstance(value, Checkpoint):
        return value
    if isinstance(value, str):
        try:
            return Checkpoint(value)
        except ValueError:
            pass
    raise ValueError(f"{field_name}: {short(value)} is not accepted; accepted: 'none', 'selective', "
                     "'full' (or false / true for none / full)")


class Precision(str, enum.Enum):
    """Training precision: parameters and reductions are fp32 master copies under bf16/fp16."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


def _enum_value(enum_cls: type[enum.Enum], value: Any, field_name: str) -> Any:
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except (ValueError, TypeError):  # TypeError: an unhashable value such as a list
        accepted = ", ".join(repr(m.value) for m in enum_cls)  # type: ignore[attr-defined]
        raise ValueError(f"{field_name}: {short(value)} is not accepted; accepted: {accepted}") from None


def _positive_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field_name} must be an integer >= 1, got {short(value)}")
    if value < 1:
        raise ValueError(f"{field_name} must be >= 1, got {value}")
    return check_int(value, field_name, 1, INT32_MAX)  # the C++ core stores int32


@dataclass(frozen=True)
class LayerStrategy:
    """Parallel strategy of one layer (or of the embedding/LM-head).

    ``tp``: tensor-parallel degree. ``sp``: Ulysses degree (1 unless ``sp_kind`` is ulysses;
    Megatron-SP shards the sequence over the tp group and has no degree of its own).
    The data-parallel degree is implied: ``dp = world_size / pp / (tp * sp)``.
    """

    tp: int = 1
    sp: int = 1
    sp_kind: SpKind = SpKind.NONE
    dp_type: DpType = DpType.DDP
    checkpoint: Checkpoint = Checkpoint.NONE
    tp_consecutive: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sp_kind", _enum_value(SpKind, self.sp_kind, "sp_kind"))
        object.__setattr__(self, "dp_type", _enum_value(DpType, self.dp_type, "dp_type"))
        object.__setattr__(self, "checkpoint", _checkpoint_value(self.checkpoint, "checkpoint"))

    def validate(self, where: str = "layer") -> None:
        _positive_int(self.tp, f"{where}.tp")
        _positive_int(self.sp, f"{where}.sp")
        if not isinstance(self.checkpoint, Checkpoint):
            raise ValueError(f"{where}.checkpoint must be 'none', 'selective' or 'full', "
                             f"got {short(self.checkpoint)}")
        if not isinstance(self.tp_consecutive, bool):
            raise ValueError(f"{where}.tp_consecutive must be true or false, got {short(self.tp_consecutive)}")
        if self.sp_kind is SpKind.ULYSSES and self.sp < 2:
            raise ValueError(f"{where}.sp must be >= 2 when sp_kind is 'ulysses', got {self.sp}")
        if self.sp_kind is not SpKind.ULYSSES and self.sp != 1:
            raise ValueError(
                f"{where}.sp={self.sp} needs sp_kind 'ulysses' (got {self.sp_kind.value!r}); "
                "sp is the Ulysses degree and must be 1 otherwise"
            )
        if self.sp_kind is SpKind.MEGATRON and self.tp < 2:
            raise ValueError(f"{where}.sp_kind 'megatron' needs tp >= 2, got tp={self.tp}")

    def describe(self) -> str:
        """Short human-readable form, e.g. ``tp2+msp dp4 zero3 ckpt`` (``sel-ckpt``: selective)."""
        parts = []
        if self.tp > 1:
            parts.append(f"tp{self.tp}" + ("+msp" if self.sp_kind is SpKind.MEGATRON else ""))
            if not self.tp_consecutive:
                parts[-1] += "(strided)"
        if self.sp_kind is SpKind.ULYSSES:
            parts.append(f"ulysses{self.sp}")
        parts.append(self.dp_type.value)
        if self.checkpoint is Checkpoint.FULL:
            parts.append("ckpt")
        elif self.checkpoint is Checkpoint.SELECTIVE:
            parts.append("sel-ckpt")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "sp": self.sp,
            "sp_kind": self.sp_kind.value,
            "dp_type": self.dp_type.value,
            "checkpoint": self.checkpoint.value,
            "tp_consecutive": self.tp_consecutive,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "layer") -> LayerStrategy:
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; accepted: {sorted(known)}")
        try:
            s = cls(**d)
        except ValueError as e:
            raise ValueError(f"{where}.{e}") from None
        s.validate(where)
        return s


@dataclass(frozen=True)
class Plan:
    """A complete hybrid-parallel training plan.

    ``stage_layers`` gives the number of layers of each pipeline chunk in model order; its
    length is ``pp * virtual_stages`` (chunk ``c`` runs on pipeline rank ``c % pp``), so
    non-uniform splits are expressed directly. ``predicted`` optionally carries the cost-model
    prediction that produced the plan (a JSON-compatible dict, see ``galvatron.Prediction``);
    ``model`` optionally records the model it was made for (``{"name": zoo flavour, "overrides":
    {...}, "seq_len": N}``), so tools need no ``--model`` for it.
    """

    world_size: int
    layers: tuple[LayerStrategy, ...]
    pp: int = 1
    stage_layers: tuple[int, ...] = ()
    schedule: Schedule = Schedule.ONE_F_ONE_B
    virtual_stages: int = 1
    num_microbatches: int = 1
    global_batch_size: int = 1
    embedding: LayerStrategy = field(default_factory=LayerStrategy)
    precision: Precision = Precision.BF16
    predicted: dict[str, Any] | None = None
    model: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "schedule", _enum_value(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "precision", _enum_value(Precision, self.precision, "precision"))
        if not self.stage_layers and isinstance(self.pp, int) and self.pp >= 1:
            chunks = self.pp * (self.virtual_stages if isinstance(self.virtual_stages, int) else 1)
            if chunks >= 1 and len(self.layers) % chunks == 0 and self.layers:
                object.__setattr__(self, "stage_layers", (len(self.layers) // chunks,) * chunks)
        object.__setattr__(self, "stage_layers", tuple(self.stage_layers))

    # ------------------------------------------------------------------ derived quantities
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def devices_per_stage(self) -> int:
        return self.world_size // self.pp

    @property
    def micro_batch_size(self) -> int:
        return self.global_batch_size // self.num_microbatches

    def dp_degree(self, strategy: LayerStrategy) -> int:
        return self.devices_per_stage // (strategy.tp * strategy.sp)

    def chunk_of_layer(self) -> list[int]:
        """Pipeline chunk index of every layer (model order)."""
        out: list[int] = []
        for c, n in enumerate(self.stage_layers):
            out.extend([c] * n)
        return out

    def stage_of_layer(self) -> list[int]:
        """Pipeline rank (stage) of every layer."""
        return [c % self.pp for c in self.chunk_of_layer()]

    # ------------------------------------------------------------------ construction
    @classmethod
    def uniform(
        cls,
        world_size: int,
        num_layers: int,
        pp: int = 1,
        tp: int = 1,
        sp: int = 1,
        sp_kind: SpKind | str | None = None,
        dp_type: DpType | str = DpType.DDP,
        checkpoint: Checkpoint | str | bool = Checkpoint.NONE,
        schedule: Schedule | str = Schedule.ONE_F_ONE_B,
        num_microbatches: int = 1,
        global_batch_size: int | None = None,
        virtual_stages: int = 1,
        precision: Precision | str = Precision.BF16,
        embedding: LayerStrategy | None = None,
    ) -> Plan:
        """A "global mode" plan: every layer gets the same strategy, layers split evenly.

        When ``num_layers`` is not divisible by the number of pipeline chunks, the first
        chunks get one layer more. ``checkpoint``: ``"none"``, ``"selective"``, ``"full"``
        (``False`` / ``True`` mean none / full). ``global_batch_size`` defaults to the smallest valid one.
        """
        _positive_int(world_size, "world_size")
        _positive_int(num_layers, "num_layers")
        _positive_int(pp, "pp")
        _positive_int(virtual_stages, "virtual_stages")
        if sp_kind is None:
            sp_kind = SpKind.ULYSSES if sp > 1 else SpKind.NONE
        checkpoint = _checkpoint_value(checkpoint, "checkpoint")
        layer = LayerStrategy(tp=tp, sp=sp, sp_kind=sp_kind, dp_type=dp_type, checkpoint=checkpoint)
        chunks = pp * virtual_stages
        if num_layers < chunks:
            raise ValueError(
                f"num_layers={num_layers} is smaller than pp*virtual_stages={chunks}; "
                "every pipeline chunk needs at least one layer"
            )
        base, extra = divmod(num_layers, chunks)
        split = tuple(base + (1 if c < extra else 0) for c in range(chunks))
        if embedding is None:
            embedding = LayerStrategy(
                tp=tp, sp=sp, sp_kind=sp_kind, dp_type=dp_type, checkpoint=False
            )
        if global_batch_size is None:
            per_stage = world_size // pp if world_size % pp == 0 else 1
            dp = max(1, per_stage // max(1, tp * sp))
            global_batch_size = dp * num_microbatches
        plan = cls(
            world_size=world_size,
            layers=(layer,) * num_layers,
            pp=pp,
            stage_layers=split,
            schedule=schedule,
            virtual_stages=virtual_stages,
            num_microbatches=num_microbatches,
            global_batch_size=global_batch_size,
            embedding=embedding,
            precision=precision,
        )
        plan.validate()
        return plan

    def replace(self, **changes: Any) -> Plan:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def validate(self, world_size: int | None = None, num_layers: int | None = None) -> Plan:
        """Check every rule; raise ``ValueError`` naming the field. Returns ``self``."""
        _positive_int(self.world_size, "world_size")
        if world_size is not None and world_size != self.world_size:
            raise ValueError(
                f"world_size: the plan is for {self.world_size} devices but the job has {world_size}"
            )
        _positive_int(self.pp, "pp")
        _positive_int(self.virtual_stages, "virtual_stages")
        _positive_int(self.num_microbatches, "num_microbatches")
        _positive_int(self.global_batch_size, "global_batch_size")
        if not self.layers:
            raise ValueError("layers: a plan needs at least one layer strategy")
        if len(self.layers) > MAX_LAYERS:
            raise ValueError(f"layers: {len(self.layers)} layer strategies; accepted: at most {MAX_LAYERS}")
        if num_layers is not None and num_layers != len(self.layers):
            raise ValueError(
                f"layers: the plan has {len(self.layers)} layer strategies but the model has "
                f"{num_layers} layers"
            )
        if self.world_size % self.pp != 0:
            raise ValueError(
                f"pp={self.pp} does not divide world_size={self.world_size}; accepted: "
                f"{_divisors(self.world_size)}"
            )
        self._validate_schedule()
        self._validate_split()
        if self.global_batch_size % self.num_microbatches != 0:
            raise ValueError(
                f"global_batch_size={self.global_batch_size} is not divisible by "
                f"num_microbatches={self.num_microbatches}"
            )
        for i, s in enumerate(self.layers):
            self._validate_strategy(s, f"layers[{i}]")
        self._validate_strategy(self.embedding, "embedding")
        if self.embedding.checkpoint:
            raise ValueError("embedding.checkpoint is not supported; accepted: 'none' (false)")
        if self.predicted is not None and not isinstance(self.predicted, dict):
            raise ValueError("predicted must be a JSON object or null")
        _validate_model_record(self.model)
        for key in ("step_time_s", "samples_per_s", "max_peak_memory_bytes"):  # shown by summary()
            if self.predicted and key in self.predicted:
                check_float(self.predicted[key], f"predicted.{key}", 0.0, 1e30)
        return self

    def _validate_schedule(self) -> None:
        if self.schedule is Schedule.INTERLEAVED_1F1B:
            if self.virtual_stages < 2:
                raise ValueError(
                    "virtual_stages must be >= 2 with schedule 'interleaved_1f1b', "
                    f"got {self.virtual_stages}"
                )
            if self.pp < 2:
                raise ValueError("schedule 'interleaved_1f1b' needs pp >= 2")
            if self.num_microbatches % self.pp != 0:
                raise ValueError(
                    f"num_microbatches={self.num_microbatches} must be a multiple of pp={self.pp} "
                    "with schedule 'interleaved_1f1b'"
                )
        elif self.virtual_stages != 1:
            raise ValueError(
                f"virtual_stages={self.virtual_stages} needs schedule 'interleaved_1f1b'; "
                f"accepted with {self.schedule.value!r}: 1"
            )

    def _validate_split(self) -> None:
        chunks = self.pp * self.virtual_stages
        if len(self.stage_layers) != chunks:
            raise ValueError(
                f"stage_layers has {len(self.stage_layers)} entries; expected pp*virtual_stages={chunks}"
            )
        for c, n in enumerate(self.stage_layers):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"stage_layers[{c}] must be an integer >= 1, got {short(n)}")
            check_int(n, f"stage_layers[{c}]", 1, MAX_LAYERS)
        if sum(self.stage_layers) != len(self.layers):
            raise ValueError(
                f"stage_layers sums to {sum(self.stage_layers)} but the plan has "
                f"{len(self.layers)} layers"
            )

    def _validate_strategy(self, s: LayerStrategy, where: str) -> None:
        if not isinstance(s, LayerStrategy):
            raise ValueError(f"{where} must be a LayerStrategy, got {type(s).__name__}")
        s.validate(where)
        per_stage = self.devices_per_stage
        if per_stage % (s.tp * s.sp) != 0:
            raise ValueError(
                f"{where}: tp*sp={s.tp * s.sp} does not divide the {per_stage} devices of a "
                f"pipeline stage (world_size/pp); accepted tp*sp: {_divisors(per_stage)}"
            )
        dp = per_stage // (s.tp * s.sp)
        if self.micro_batch_size % dp != 0:
            raise ValueError(
                f"{where}: the micro-batch size {self.micro_batch_size} (global_batch_size/"
                f"num_microbatches) is not divisible by its data-parallel degree dp={dp}"
            )

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_FORMAT_VERSION,
            "world_size": self.world_size,
            "pp": self.pp,
            "schedule": self.schedule.value,
            "virtual_stages": self.virtual_stages,
            "num_microbatches": self.num_microbatches,
            "global_batch_size": self.global_batch_size,
            "stage_layers": list(self.stage_layers),
            "precision": self.precision.value,
            "embedding": self.embedding.to_dict(),
            "layers": [s.to_dict() for s in self.layers],
            "predicted": self.predicted,
            **({"model": self.model} if self.model is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Plan:
        if not isinstance(d, dict):
            raise ValueError(f"a plan must be a JSON object, got {type(d).__name__}")
        version = d.get("version")
        if version is None:
            if is_galvatron2_plan(d):
                raise ValueError(
                    "this looks like a Galvatron-2 plan (it has 'pp_deg'/'tp_sizes_enc'); "
                    "load it with galvatron.plan_io.load_plan(path, world_size=...)"
                )
            raise ValueError("version: missing; a Galvatron plan has a 'version' field")
        if version != PLAN_FORMAT_VERSION:
            raise ValueError(
                f"version: {version!r} is not supported; accepted: {PLAN_FORMAT_VERSION}"
            )
        required = ("world_size", "layers")
        for key in required:
            if key not in d:
                raise ValueError(f"{key}: missing (required keys: {', '.join(required)})")
        known = {f.name for f in dataclasses.fields(cls)} | {"version"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown}; accepted: {sorted(known)}")
        layers = d["layers"]
        if not isinstance(layers, list):
            raise ValueError("layers must be a list of layer strategies")
        if len(layers) > MAX_LAYERS:
            raise ValueError(f"layers: {len(layers)} layer strategies; accepted: at most {MAX_LAYERS}")
        kwargs = {k: v for k, v in d.items() if k not in ("version", "layers", "embedding")}
        if "stage_layers" in kwargs:
            if not isinstance(kwargs["stage_layers"], list):
                raise ValueError("stage_layers must be a list of integers")
            if len(kwargs["stage_layers"]) > MAX_LAYERS:
                raise ValueError(f"stage_layers: {len(kwargs['stage_layers'])} entries; accepted: at most {MAX_LAYERS}")
            kwargs["stage_layers"] = tuple(kwargs["stage_layers"])
        strategies = tuple(LayerStrategy.from_dict(x, f"layers[{i}]") for i, x in enumerate(layers))
        if "embedding" in d:
            kwargs["embedding"] = LayerStrategy.from_dict(d["embedding"], "embedding")
        plan = cls(layers=strategies, **kwargs)
        return plan.validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Validate, then write atomically (a temp file renamed into place)."""
        self.validate()
        _atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Plan:
        """Load a plan saved by :meth:`save`; a Galvatron-2 file is detected and explained
        (:func:`galvatron.plan_io.load_plan` reads either format)."""
        return load_json(path, cls.from_dict, "plan")

    # ------------------------------------------------------------------ display
    def layer_runs(self) -> list[tuple[int, int, int, LayerStrategy]]:
        """Runs of identical consecutive layers within a stage: (stage, first, last, strategy)."""
        runs: list[tuple[int, int, int, LayerStrategy]] = []
        stages = self.stage_of_layer()
        chunks = self.chunk_of_layer()
        for i, s in enumerate(self.layers):
            if runs and runs[-1][3] == s and chunks[i - 1] == chunks[i]:
                st, first, _, strat = runs[-1]
                runs[-1] = (st, first, i, strat)
            else:
                runs.append((stages[i], i, i, s))
        return runs

    def summary(self) -> str:
        """A readable table of the plan (what ``galvatron plan show`` prints)."""
        lines = [
            f"world_size={self.world_size}  pp={self.pp}  schedule={self.schedule.value}"
            + (f"  virtual_stages={self.virtual_stages}" if self.virtual_stages > 1 else "")
            + f"  micro-batches={self.num_microbatches}  global_batch={self.global_batch_size}"
            + f"  precision={self.precision.value}",
            f"layers per pipeline chunk: {list(self.stage_layers)}",
        ]
        rows = [("stage", "layers", "tp", "sp", "dp", "dp_type", "ckpt")]

        def row(stage: str, layers: str, s: LayerStrategy) -> tuple[str, ...]:
            tp = f"{s.tp}" + ("+msp" if s.sp_kind is SpKind.MEGATRON else "")
            if s.tp > 1 and not s.tp_consecutive:
                tp += " strided"
            sp = f"{s.sp} ulysses" if s.sp_kind is SpKind.ULYSSES else "-"
            return (stage, layers, tp, sp, str(self.dp_degree(s)), s.dp_type.value,
                    {Checkpoint.NONE: "no", Checkpoint.FULL: "full"}.get(s.checkpoint, "selective"))

        rows.append(row("-", "embed/head", self.embedding))
        for stage, first, last, s in self.layer_runs():
            rng = f"{first}" if first == last else f"{first}-{last}"
            rows.append(row(str(stage), rng, s))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
        if self.predicted:
            p = self.predicted
            bits = []
            if "step_time_s" in p:
                bits.append(f"step {p['step_time_s'] * 1e3:.1f} ms")
            if "samples_per_s" in p:
                bits.append(f"{p['samples_per_s']:.2f} samples/s")
            if "max_peak_memory_bytes" in p:
                bits.append(f"peak {p['max_peak_memory_bytes'] / 2**30:.2f} GiB/device")
            if bits:
                lines.append("predicted: " + ", ".join(bits))
        return "\n".join(lines)


def is_galvatron2_plan(data: Any) -> bool:
    """Whether parsed plan JSON is Galvatron-2's format (no ``version``, its ``pp_deg`` or
    ``tp_sizes_enc`` keys). The one definition: ``Plan.from_dict``, :mod:`galvatron.plan_io`
    and the CLI all ask here."""
    return isinstance(data, dict) and "version" not in data and ("pp_deg" in data or "tp_sizes_enc" in data)


def _validate_model_record(model: Any) -> None:
    """``model``: null or {"name": str, "overrides": {...}, "seq_len": int >= 1} (the last two optional)."""
    if model is None:
        return
    if not isinstance(model, dict) or not isinstance(model.get("name"), str) or not model["name"]:
        raise ValueError('model must be null or an object with a "name" (a model flavour), '
                         f"got {model!r}")
    unknown = sorted(set(model) - {"name", "overrides", "seq_len"})
    if unknown:
        raise ValueError(f"model: unknown keys {unknown}; accepted: ['name', 'overrides', 'seq_len']")
    if not isinstance(model.get("overrides", {}), dict):
        raise ValueError("model.overrides must be an object")
    seq = model.get("seq_len")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 1):
        raise ValueError(f"model.seq_len must be an integer >= 1 or null, got {seq!r}")


def _divisors(n: int) -> list[int]:
    """Divisors of n in increasing order, in O(sqrt(n)) (n may be as large as 2**31)."""
    low = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return low + [n // d for d in reversed(low) if d * d != n]
