"""Hardware profiles: collective costs (alpha-beta), overlap, memory, compute peaks.

A :class:`HardwareProfile` is measured by ``galvatron profile hardware``, built from public
specifications by :func:`hardware_preset`, or imported from Galvatron-2's profile files by
:func:`galvatron.profiles.hardware_from_galvatron`. Collective time is ``alpha_ms + bytes / bandwidth``
where ``bytes`` is the message size: the full tensor for all-reduce, the gathered output for
all-gather, the full input for reduce-scatter, what one rank sends in total for all-to-all,
the payload for p2p. Units are in the key names; 1 GB/s = 1e9 bytes/s.

Any group size: a profile measured at some sizes is extended to every size the world can form
(:meth:`HardwareProfile.complete`, with the bus-bandwidth model of
:func:`interpolate`, the bus-bandwidth model of :mod:`galvatron.profiles.collectives`); the derived entries are marked ``derived`` and
:attr:`HardwareProfile.derived_sizes` names them.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import math
import os
from dataclasses import dataclass, field
from typing import Any

from galvatron import _C
from galvatron._core_convert import hardware_tables
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
    derived: bool = False  # interpolated/extrapolated from measured sizes, not measured

    def time_ms(self, nbytes: float) -> float:
        return self.alpha_ms + nbytes / (self.bandwidth_gbps * 1e6)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"op": self.op.value, "group_size": self.group_size,
                             "placement": self.placement.value, "alpha_ms": self.alpha_ms,
                             "bandwidth_gbps": self.bandwidth_gbps}
        if self.points:
            d["points"] = [list(p) for p in self.points]
        if self.derived:
            d["derived"] = True
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Collective:
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a JSON object")
        unknown = sorted(set(d) - {"op", "group_size", "placement", "alpha_ms", "bandwidth_gbps", "points", "derived"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {[k[:40] for k in unknown[:5]]}")
        for key in ("op", "group_size", "alpha_ms", "bandwidth_gbps"):
            if key not in d:
                raise ValueError(f"{where}: missing key {key!r}")
        points = check_list(d.get("points", []), f"{where}.points", 10_000)
        for i, pt in enumerate(points):
            if not isinstance(pt, (list, tuple)) or len(pt) != 2:
                raise ValueError(f"{where}.points[{i}] must be a [bytes, ms] pair, got {short(pt)}")
        if not isinstance(d.get("derived", False), bool):
            raise ValueError(f"{where}.derived must be true or false, got {short(d['derived'])}")
        c = cls(op=_enum(Op, d["op"], f"{where}.op"), group_size=d["group_size"],
                placement=_enum(Placement, d.get("placement", "consecutive"), f"{where}.placement"),
                alpha_ms=d["alpha_ms"], bandwidth_gbps=d["bandwidth_gbps"],
                points=tuple((b, t) for b, t in points), derived=d.get("derived", False))
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


def bus_factor(op: Op, n: int) -> float:
    """Bytes on the busiest link per byte of the message (nccl-tests' busbw / algbw)."""
    if op is Op.P2P or n <= 1:
        return 1.0
    if op is Op.ALL_REDUCE:
        return 2.0 * (n - 1) / n
    return (n - 1) / n


def group_sizes(world: int, gpus_per_node: int) -> list[int]:
    """Every group size the search or the runtime can form on ``world`` devices: tp, sp, dp and
    stage groups divide the world size; pipeline p2p and the tied-weight sync use 2."""
    del gpus_per_node  # groups inside a node divide the world size too
    return sorted({d for d in range(2, world + 1) if world % d == 0} | {2})


def interpolate(collectives: tuple[Collective, ...], sizes: list[int], gpus_per_node: int) -> tuple[Collective, ...]:
    """``collectives`` plus derived entries for every (op, placement) measured at some size and
    every size of ``sizes`` it lacks where the placement exists (a group inside a node has at
    most ``gpus_per_node`` ranks; p2p has 2): per (op, placement), bus bandwidth (algorithm
    bandwidth times :func:`bus_factor`) and latency linear in ``log2(n)`` between the two nearest
    measured sizes, held at the nearest one outside the measured range; marked ``derived``."""
    have: dict[tuple[Op, Placement], dict[int, Collective]] = {}
    for c in collectives:
        have.setdefault((c.op, c.placement), {})[c.group_size] = c
    out = list(collectives)
    for (op, pl), measured in sorted(have.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)):
        known = sorted(measured)
        for n in sizes:
            if n in measured or n < 2 or (op is Op.P2P and n != 2):
                continue
            if pl is not Placement.INTER_NODE and n > gpus_per_node:
                continue
            lo = max((k for k in known if k < n), default=None)
            hi = min((k for k in known if k > n), default=None)
            if lo is None or hi is None:
                near = measured[lo if hi is None else hi]
                bus, alpha = near.bandwidth_gbps * bus_factor(op, near.group_size), near.alpha_ms
            else:
                w = (math.log2(n) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
                a, b = measured[lo], measured[hi]
                bus = (1 - w) * a.bandwidth_gbps * bus_factor(op, lo) + w * b.bandwidth_gbps * bus_factor(op, hi)
                alpha = (1 - w) * a.alpha_ms + w * b.alpha_ms
            out.append(Collective(op, n, pl, alpha, bus / bus_factor(op, n), derived=True))
    return tuple(out)


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
    inter_node_rings: int = 1  # see HardwareTables.inter_node_rings (csrc/search/problem.h)
    peak_tflops: dict[str, float] = field(default_factory=dict)  # per dtype: bf16, fp16, fp32
    # The analytic model profile's compute model (galvatron.profiles.gpu_compute): achieved /
    # peak of the best-shaped large GEMM; with num_sms > 0 each GEMM is further priced by its
    # tile and wave quantisation and memory-bound operators by memory_bandwidth_gbps.
    matmul_efficiency: float = 0.6
    num_sms: int = 0  # 0: flat model (every FLOP at peak * matmul_efficiency)
    memory_bandwidth_gbps: float = 0.0  # device memory (HBM) bandwidth, datasheet
    attention_efficiency: float = 0.0  # fused (flash) attention fwd+bwd achieved / peak; 0: matmul_efficiency
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

    def complete(self) -> HardwareProfile:
        """This profile with an entry for every (op, placement) it has at every group size the
        world can form; entries it lacks are derived (marked ``derived``) by
        :func:`galvatron.profiles.collectives.interpolate`."""
        colls = interpolate(self.collectives, group_sizes(self.world_size, self.gpus_per_node), self.gpus_per_node)
        return self if len(colls) == len(self.collectives) else dataclasses.replace(self, collectives=colls)

    @property
    def derived_sizes(self) -> dict[str, list[int]]:
        """Group sizes whose entries are derived rather than measured, per op (after
        :meth:`complete`); empty when every entry the world needs was measured."""
        out: dict[str, set[int]] = {}
        for c in self.complete().collectives:
            if c.derived:
                out.setdefault(c.op.value, set()).add(c.group_size)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def validate(self) -> HardwareProfile:
        """Check every field's type and range (``ValueError`` naming it), then the C++ rules."""
        check_int(self.num_nodes, "num_nodes", 1, 65536)
        check_int(self.gpus_per_node, "gpus_per_node", 1, 4096)
        if self.num_nodes * self.gpus_per_node > MAX_WORLD:
            raise ValueError(f"num_nodes x gpus_per_node = {self.num_nodes * self.gpus_per_node} devices; "
                             f"accepted: at most {MAX_WORLD}")
        check_int(self.device_memory_bytes, "device_memory_bytes", 1, MAX_BYTES)
        check_int(self.inter_node_rings, "inter_node_rings", 1, 4096)
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
        """The core's ``HardwareTables`` (:func:`galvatron._core_convert.hardware_tables`)."""
        return hardware_tables(self)

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
                         f"alpha {c.alpha_ms * 1e3:8.1f} us  {c.bandwidth_gbps:9.2f} GB/s"
                         + ("  (derived)" if c.derived else ""))
        return "\n".join(lines)
