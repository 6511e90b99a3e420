"""Hardware profiles: collective costs (alpha-beta), overlap, memory, compute peaks.

A :class:`HardwareProfile` is measured by ``galvatron profile hardware``, built from public
specifications by :func:`hardware_preset`, or imported from Galvatron-2's profile files by
:func:`galvatron.profiles.hardware_from_galvatron`. Collective time is ``alpha_ms + bytes / bandwidth``
where ``bytes`` is the message size: the full tensor for all-reduce, the gathered output for
all-gather, the full input for reduce-scatter, what one rank sends in total for all-to-all,
the payload for p2p. Units are in the key names; 1 GB/s = 1e9 bytes/s.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import os
from dataclasses import dataclass, field
from typing import Any

from galvatron import _C
from galvatron._io import atomic_write_text, load_json
from galvatron._validate import (
    MAX_BYTES,
    MAX_MS,
    MAX_WORLD,
    check_dict,
    check_float,
    check_int,
    check_list,
    check_str,
    short,
)

HARDWARE_FORMAT_VERSION = 1
MIN_BANDWIDTH_GBPS = 1e-6  # 1 kB/s: below this every collective takes longer than any run
MAX_BANDWIDTH_GBPS = 1e7  # 10 PB/s: no link comes near; Infinity is refused
MAX_ALPHA_MS = 1e6


class Op(str, enum.Enum):
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_TO_ALL = "all_to_all"
    P2P = "p2p"


class Placement(str, enum.Enum):
    CONSECUTIVE = "consecutive"  # adjacent ranks of one node
    STRIDED = "strided"  # non-adjacent ranks of one node
    INTER_NODE = "inter_node"  # ranks on several nodes


def powers_of_two(upto: int, start: int = 1) -> list[int]:
    """start, 2*start, 4*start, ... up to and including `upto` (start a power of two)."""
    out, n = [], start
    while n <= upto:
        out.append(n)
        n *= 2
    return out


_OP_C = {Op.ALL_REDUCE: _C.Op.ALL_REDUCE, Op.ALL_GATHER: _C.Op.ALL_GATHER,
         Op.REDUCE_SCATTER: _C.Op.REDUCE_SCATTER, Op.ALL_TO_ALL: _C.Op.ALL_TO_ALL, Op.P2P: _C.Op.P2P}
_PLACEMENT_C = {Placement.CONSECUTIVE: _C.Placement.CONSECUTIVE, Placement.STRIDED: _C.Placement.STRIDED,
                Placement.INTER_NODE: _C.Placement.INTER_NODE}


@dataclass(frozen=True)
class Collective:
    """Fitted cost of one collective on one kind of group; ``points`` keeps the raw
    measurements as ``[bytes, ms]`` pairs when the profile was measured."""

    op: Op
    group_size: int
    placement: Placement
    alpha_ms: float
    bandwidth_gbps: float
    points: tuple[tuple[float, float], ...] = ()

    def time_ms(self, nbytes: float) -> float:
        return self.alpha_ms + nbytes / (self.bandwidth_gbps * 1e6)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op.value, "group_size": self.group_size,
                             "placement": self.placement.value, "alpha_ms": self.alpha_ms,
                             "bandwidth_gbps": self.bandwidth_gbps}
        if self.points:
            d["points"] = [list(p) for p in self.points]
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Collective:
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a JSON object")
        unknown = sorted(set(d) - {"op", "group_size", "placement", "alpha_ms", "bandwidth_gbps", "points"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {[k[:40] for k in unknown[:5]]}")
        for key in ("op", "group_size", "alpha_ms", "bandwidth_gbps"):
            if key not in d:
                raise ValueError(f"{where}: missing key {key!r}")
        points = check_list(d.get("points", []), f"{where}.points", 10_000)
        for i, pt in enumerate(points):
            if not isinstance(pt, (list, tuple)) or len(pt) != 2:
                raise ValueError(f"{where}.points[{i}] must be a [bytes, ms] pair, got {short(pt)}")
        c = cls(op=_enum(Op, d["op"], f"{where}.op"), group_size=d["group_size"],
                placement=_enum(Placement, d.get("placement", "consecutive"), f"{where}.placement"),
                alpha_ms=d["alpha_ms"], bandwidth_gbps=d["bandwidth_gbps"],
                points=tuple((b, t) for b, t in points))
        c.validate(where)
        return c

    def validate(self, where: str = "collective") -> Collective:
        """Every field finite and in range (a bandwidth of Infinity or 0 is refused)."""
        _enum(Op, self.op, f"{where}.op")
        _enum(Placement, self.placement, f"{where}.placement")
        check_int(self.group_size, f"{where}.group_size", 2, MAX_WORLD)
        check_float(self.alpha_ms, f"{where}.alpha_ms", 0.0, MAX_ALPHA_MS)
        check_float(self.bandwidth_gbps, f"{where}.bandwidth_gbps", MIN_BANDWIDTH_GBPS, MAX_BANDWIDTH_GBPS)
        for i, (b, t) in enumerate(self.points):
            check_float(b, f"{where}.points[{i}][0] (bytes)", 0.0, float(MAX_BYTES))
            check_float(t, f"{where}.points[{i}][1] (ms)", 0.0, MAX_MS)
        return self


def _enum(cls: type, value: Any, where: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except (ValueError, TypeError):
        accepted = ", ".join(repr(m.value) for m in cls)  # type: ignore[attr-defined]
        raise ValueError(f"{where}: {short(value)} is not accepted; accepted: {accepted}") from None


@dataclass(frozen=True)
class HardwareProfile:
    """What the cost model needs to know about a cluster."""

    num_nodes: int
    gpus_per_node: int
    device_memory_bytes: int
    collectives: tuple[Collective, ...]
    name: str = "custom"
    backend: str = "nccl"
    overlap_slowdown: float = 1.0
    optimizer_ms_per_param: float = 0.0
    framework_overhead_bytes: int = 0
    comm_buffer_bytes: int = 0
    peak_tflops: dict[str, float] = field(default_factory=dict)  # per dtype: bf16, fp16, fp32
    matmul_efficiency: float = 0.6  # achieved / peak for the analytic model profile
    source: str = "preset"
    measurements: dict[str, Any] = field(default_factory=dict)  # profiler details; not used by the search

    @property
    def world_size(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def collective(self, op: Op | str, group_size: int, placement: Placement | str) -> Collective | None:
        op, placement = Op(op), Placement(placement)
        for c in self.collectives:
            if c.op is op and c.group_size == group_size and c.placement is placement:
                return c
        return None

    def validate(self) -> HardwareProfile:
        """Check every field's type and range (``ValueError`` naming it), then the C++ rules."""
        check_int(self.num_nodes, "num_nodes", 1, 65536)
        check_int(self.gpus_per_node, "gpus_per_node", 1, 4096)
        if self.num_nodes * self.gpus_per_node > MAX_WORLD:
            raise ValueError(f"num_nodes x gpus_per_node = {self.num_nodes * self.gpus_per_node} devices; "
                             f"accepted: at most {MAX_WORLD}")
        check_int(self.device_memory_bytes, "device_memory_bytes", 1, MAX_BYTES)
        check_float(self.overlap_slowdown, "overlap_slowdown", 1.0, 100.0)
        check_float(self.optimizer_ms_per_param, "optimizer_ms_per_param", 0.0, 1e3)
        check_int(self.framework_overhead_bytes, "framework_overhead_bytes", 0, MAX_BYTES)
        check_int(self.comm_buffer_bytes, "comm_buffer_bytes", 0, MAX_BYTES)
        check_dict(self.peak_tflops, "peak_tflops")
        for k, v in self.peak_tflops.items():
            check_str(k, "peak_tflops key", 32)
            check_float(v, f"peak_tflops.{k}", 0.0, 1e6, lo_open=True)
        check_float(self.matmul_efficiency, "matmul_efficiency", 0.0, 1.0, lo_open=True)
        for name in ("name", "backend", "source"):
            check_str(getattr(self, name), name, 256)
        check_dict(self.measurements, "measurements")
        colls = self.collectives
        if not isinstance(colls, tuple) or len(colls) > 100_000:
            raise ValueError("collectives must be a list of at most 100000 entries")
        for i, c in enumerate(colls):
            if not isinstance(c, Collective):
                raise ValueError(f"collectives[{i}] must be a Collective, got {short(c)}")
            c.validate(f"collectives[{i}]")
        _C.validate_hardware(self.to_tables())
        return self

    def to_tables(self) -> Any:
        t = _C.HardwareTables()
        t.num_nodes, t.gpus_per_node = self.num_nodes, self.gpus_per_node
        entries = []
        for c in self.collectives:
            e = _C.CollectiveEntry()
            e.op, e.group_size, e.placement = _OP_C[c.op], c.group_size, _PLACEMENT_C[c.placement]
            e.alpha_ms, e.bandwidth_gbps = c.alpha_ms, c.bandwidth_gbps
            entries.append(e)
        t.collectives = entries
        t.overlap_slowdown = self.overlap_slowdown
        t.optimizer_ms_per_param = self.optimizer_ms_per_param
        t.framework_overhead_bytes = self.framework_overhead_bytes
        t.comm_buffer_bytes = self.comm_buffer_bytes
        return t

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "collectives"}
        d["collectives"] = [c.to_dict() for c in self.collectives]
        return {"version": HARDWARE_FORMAT_VERSION, "kind": "hardware", **d}

    @classmethod
    def from_dict(cls, d: Any) -> HardwareProfile:
        if not isinstance(d, dict):
            raise ValueError("a hardware profile must be a JSON object")
        if d.get("kind") != "hardware":
            raise ValueError(f"kind: expected 'hardware', got {d.get('kind')!r}")
        if d.get("version") != HARDWARE_FORMAT_VERSION:
            raise ValueError(f"version: {d.get('version')!r} is not supported; accepted: {HARDWARE_FORMAT_VERSION}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"version", "kind"})
        if unknown:
            raise ValueError(f"unknown keys {unknown}; accepted: {sorted(known)}")
        for key in ("num_nodes", "gpus_per_node", "device_memory_bytes", "collectives"):
            if key not in d:
                raise ValueError(f"{key}: missing")
        check_list(d["collectives"], "collectives", 100_000)
        kwargs = {k: v for k, v in d.items() if k in known and k != "collectives"}
        colls = tuple(Collective.from_dict(c, f"collectives[{i}]") for i, c in enumerate(d["collectives"]))
        return cls(collectives=colls, **kwargs).validate()

    def save(self, path: str | os.PathLike[str]) -> None:
        import json

        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HardwareProfile:
        return load_json(path, cls.from_dict, "hardware profile")

    def summary(self) -> str:
        lines = [f"{self.name}: {self.num_nodes} node(s) x {self.gpus_per_node} devices, "
                 f"{self.device_memory_bytes / 2**30:.1f} GiB each, backend {self.backend} ({self.source})"]
        for c in sorted(self.collectives, key=lambda c: (c.op.value, c.placement.value, c.group_size)):
            lines.append(f"  {c.op.value:<15} n={c.group_size:<5} {c.placement.value:<12} "
                         f"alpha {c.alpha_ms * 1e3:8.1f} us  {c.bandwidth_gbps:9.2f} GB/s")
        return "\n".join(lines)
