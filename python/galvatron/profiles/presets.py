"""Analytic hardware presets from public specifications (no profiling needed).

Bandwidths are per-GPU "bus bandwidth" figures of NCCL collectives as commonly achieved
(nccl-tests), not link peaks:

=================  ==========  ===========  ============  ==========  ==============
preset             memory      bf16 dense   NVLink bus    IB per GPU  source
=================  ==========  ===========  ============  ==========  ==============
a100-40g-sxm       40 GiB      312 TFLOP/s  230 GB/s      20 GB/s     A100 datasheet: NVLink3 600 GB/s, HDR 200 Gb/s
a100-80g-sxm       80 GiB      312 TFLOP/s  230 GB/s      20 GB/s     same
h100-sxm           80 GiB      989 TFLOP/s  360 GB/s      42 GB/s     H100 datasheet: NVLink4 900 GB/s, NDR 400 Gb/s
h200               141e9 B     989 TFLOP/s  360 GB/s      42 GB/s     H200 datasheet: 141 GB HBM3e, NVLink4
cpu-gloo           24 GiB/n    0.48 TFLOP/s 1.6 GB/s      1.6 GB/s    measured on the 2-core development VM (gloo)
=================  ==========  ===========  ============  ==========  ==============

Algorithm bandwidth from bus bandwidth ``B`` for ``n`` ranks: all-reduce ``B*n/(2(n-1))``,
all-gather / reduce-scatter ``B*n/(n-1)``, all-to-all ``B*n/(n-1)`` (on the bytes one rank
sends), p2p ``B``. The optimizer step is costed at 28 bytes per local parameter (AdamW) over the
HBM bandwidth (A100-40 1.55 TB/s, A100-80 2.0, H100 3.35, H200 4.8; CPU ~10 GB/s). Latencies: 10 us inside a node, 25 us across nodes (5 us/100 us on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from galvatron.profiles.hardware import Collective, HardwareProfile, Op, Placement, powers_of_two


@dataclass(frozen=True)
class _Spec:
    memory_bytes: int
    peak_tflops: dict[str, float]
    intra_bus_gbps: float
    inter_bus_gbps: float
    intra_alpha_ms: float
    inter_alpha_ms: float
    overlap_slowdown: float
    memory_bandwidth: float  # bytes/s; AdamW moves ~28 B per parameter (read p,g,m,v; write p,m,v)
    framework_overhead_bytes: int
    comm_buffer_bytes: int
    backend: str = "nccl"
    efficiency: float = 0.6


GiB = 2**30
_PRESETS: dict[str, _Spec] = {
    "a100-40g-sxm": _Spec(40 * GiB, {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}, 230.0, 20.0, 0.010, 0.025,
                          1.13, 1.55e12, 1 * GiB, GiB // 2),
    "a100-80g-sxm": _Spec(80 * GiB, {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}, 230.0, 20.0, 0.010, 0.025,
                          1.13, 2.0e12, 1 * GiB, GiB // 2),
    "h100-sxm": _Spec(80 * GiB, {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 360.0, 42.0, 0.010, 0.025,
                      1.13, 3.35e12, 1 * GiB, GiB // 2),
    "h200": _Spec(141 * 10**9, {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 360.0, 42.0, 0.010, 0.025,
                  1.13, 4.8e12, 1 * GiB, GiB // 2),
    # Measured on the 2-core development VM with `galvatron profile hardware` (2 gloo ranks):
    # all-reduce 1.58 GB/s bus, alpha ~0.2 ms; matmul 0.11 TFLOP/s fp32, 0.48 bf16; AdamW 3.5 ns
    # per parameter (28 B / 3.5 ns = 8 GB/s); compute and gloo barely overlap (1.93).
    "cpu-gloo": _Spec(24 * GiB, {"bf16": 0.48, "fp16": 0.1, "fp32": 0.11}, 1.6, 1.6, 0.2, 0.2,
                      1.9, 8.0e9, GiB // 4, 0, backend="gloo", efficiency=1.0),
}


def preset_names() -> list[str]:
    return list(_PRESETS)


def datasheet_peak_tflops(device_name: str, dtype: str) -> float | None:
    """The datasheet peak TFLOP/s of a GPU a preset describes (A100, H100, H200), matched on
    its name (e.g. ``torch.cuda.get_device_name()``); None for other devices."""
    name = device_name.upper()
    for key, preset in (("H200", "h200"), ("H100", "h100-sxm"), ("A100", "a100-80g-sxm")):
        if key in name:
            return _PRESETS[preset].peak_tflops.get(dtype)
    return None


def _alg_gbps(op: Op, n: int, bus: float) -> float:
    if op is Op.ALL_REDUCE:
        return bus * n / (2 * (n - 1))
    if op is Op.P2P:
        return bus
    return bus * n / (n - 1)


def hardware_preset(name: str, num_nodes: int = 1, gpus_per_node: int = 8) -> HardwareProfile:
    """An analytic :class:`HardwareProfile` for ``num_nodes`` x ``gpus_per_node`` devices."""
    if name not in _PRESETS:
        raise ValueError(f"hardware preset {name!r} is unknown; accepted: {', '.join(_PRESETS)}")
    for field_name, v in (("num_nodes", num_nodes), ("gpus_per_node", gpus_per_node)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{field_name} must be an integer >= 1, got {v!r}")
    s = _PRESETS[name]
    memory = s.memory_bytes // gpus_per_node if name == "cpu-gloo" else s.memory_bytes
    world = num_nodes * gpus_per_node
    colls = []
    for op in Op:
        for n in powers_of_two(max(world, 2), start=2):
            placements = []
            if n <= gpus_per_node:
                placements += [Placement.CONSECUTIVE, Placement.STRIDED]
            if num_nodes > 1 or op is Op.P2P:
                placements.append(Placement.INTER_NODE)
            for pl in placements:
                inter = pl is Placement.INTER_NODE
                bus = s.inter_bus_gbps if inter else s.intra_bus_gbps
                alpha = s.inter_alpha_ms if inter else s.intra_alpha_ms
                colls.append(Collective(op, n, pl, alpha, _alg_gbps(op, n, bus)))
    return HardwareProfile(
        num_nodes=num_nodes, gpus_per_node=gpus_per_node, device_memory_bytes=memory,
        collectives=tuple(colls), name=name, backend=s.backend, overlap_slowdown=s.overlap_slowdown,
        optimizer_ms_per_param=28.0 / s.memory_bandwidth * 1e3,
        framework_overhead_bytes=s.framework_overhead_bytes, comm_buffer_bytes=s.comm_buffer_bytes,
        peak_tflops=dict(s.peak_tflops), matmul_efficiency=s.efficiency, source="preset",
    ).validate()
