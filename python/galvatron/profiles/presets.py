"""Analytic hardware presets from public specifications (no profiling needed).

Every figure is a datasheet value or a published measurement, named with its source here;
nothing is fitted to a training run. See docs/cost_model.md for how each is used.

=====================  =======  =====  =========  =======  =====  ======  ======  =====================
preset                 memory   SMs    bf16 peak  HBM      MAMF   FA fwd  NVLink  NIC per GPU
                                       TFLOP/s    TB/s     frac   +bwd    bus     (bus GB/s)
=====================  =======  =====  =========  =======  =====  ======  ======  =====================
a100-40g-sxm           40 GiB   108    312        1.555    0.869  0.60    230     HDR 200 Gb/s (24)
a100-80g-sxm           80 GiB   108    312        2.039    0.869  0.60    230     HDR 200 Gb/s (24)
h100-sxm               80 GiB   132    989        3.35     0.803  0.35    360     NDR 400 Gb/s (48)
h100-96g-hbm2e-500w    96 GiB   132    886        2.4      0.803  0.35    360     400 Gb/s RoCE (48)
h200                   141e9 B  132    989        4.8      0.838  0.35    360     NDR 400 Gb/s (48)
cpu-gloo               24 GiB/n  -     0.48       0.008    1.0    -       1.6     1.6 (gloo)
=====================  =======  =====  =========  =======  =====  ======  ======  =====================

Sources:

- Memory, SMs, peak, HBM bandwidth: NVIDIA A100 / H100 / H200 datasheets. The 96 GB HBM2e H100
  capped at 500 W is the part of torchtitan's Dec-2024 benchmarks
  (``benchmarks/llama3_h100_202412_torchtitan.md``: 2.4 TB/s; "the actual peak TFLOPs number is
  between SXM and NVL"): its peak is interpolated linearly in the power limit between the
  H100 NVL (835 TFLOP/s at 400 W) and the H100 SXM (989 at 700 W): 886 at 500 W.
- MAMF fraction: "Maximum Achievable Matmul FLOPS" of the best-shaped bf16 GEMM over the peak,
  measured with ``mamf-finder.py`` (stas00/ml-engineering, compute/accelerator/README.md): A100
  SXM 271.2/312, H100 SXM 794.5/989, GH200 (the H200 die, 141 GB HBM3e) 828.6/989. The 500 W part
  uses the H100 SXM fraction of its own peak.
- FA fwd+bwd: fraction of peak FlashAttention-2 reaches for causal head-dim-128 training at
  2k-16k tokens: about 0.6 on A100 (Dao 2023, FlashAttention-2, Fig. 4-6: 170-200 TFLOP/s) and
  about 0.35 on H100 (Shah et al. 2024, FlashAttention-3, Fig. 5: FlashAttention-2 at 300-360).
- NVLink bus bandwidth: what nccl-tests all-reduce reaches inside a DGX/HGX node (NCCL caps
  A100 at 235 GB/s in its own model, src/graph/tuning.cc; H100 NVLink4 without NVLS ~360).
  NIC: line rate of one 200 or 400 Gb/s port per GPU, less ~4% protocol overhead.
- Collective latencies: NCCL's own model (see :mod:`galvatron.profiles.collectives`).
- overlap_slowdown ``1 + 16 / SMs``: an NCCL collective overlapped with compute runs each of
  its channels as a thread block that holds an SM the GEMMs then lack; we take 16 channels, the
  order NCCL opens on 8-GPU NVSwitch nodes (the count varies with the NCCL version and topology;
  NCCL_MIN_NCHANNELS / NCCL_MAX_NCHANNELS set it). Memory-bandwidth contention is not counted.
- The optimizer step moves ~28 B per parameter (AdamW: read p, g, m, v; write p, m, v) at the
  HBM bandwidth.
- cpu-gloo: measured on the 2-core development VM with ``galvatron profile hardware`` (2 gloo
  ranks): all-reduce 1.58 GB/s bus, alpha ~0.2 ms; matmul 0.11 TFLOP/s fp32, 0.48 bf16; AdamW
  3.5 ns per parameter (28 B / 3.5 ns = 8 GB/s); compute and gloo barely overlap (1.93).

Collectives: entries for every group size the world can form (not only powers of two), from
the topology (:func:`galvatron.profiles.collectives.topology_collectives`).
"""

from __future__ import annotations

from dataclasses import dataclass

from galvatron.profiles.collectives import Topology, topology_collectives
from galvatron.profiles.hardware import Collective, HardwareProfile, Op, Placement


@dataclass(frozen=True)
class _Spec:
    memory_bytes: int
    peak_tflops: dict[str, float]
    intra_bus_gbps: float
    inter_bus_gbps: float  # per GPU (its NIC)
    memory_bandwidth: float  # bytes/s
    framework_overhead_bytes: int
    comm_buffer_bytes: int
    num_sms: int = 0
    mamf: float = 0.6  # best-shaped GEMM achieved / peak
    attention: float = 0.0  # flash attention fwd+bwd achieved / peak
    backend: str = "nccl"
    overlap_slowdown: float = 0.0  # 0: 1 + 16 / num_sms (NCCL channels holding SMs)
    cpu_alpha_ms: float = 0.0  # gloo: measured latency instead of NCCL's model


GiB = 2**30
_A100 = {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}
_H100 = {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}
_H100_500W = {"bf16": 886.0, "fp16": 886.0, "fp32": 60.0}
_PRESETS: dict[str, _Spec] = {
    "a100-40g-sxm": _Spec(40 * GiB, _A100, 230.0, 24.0, 1.555e12, 1 * GiB, GiB // 2, 108, 0.869, 0.60),
    "a100-80g-sxm": _Spec(80 * GiB, _A100, 230.0, 24.0, 2.039e12, 1 * GiB, GiB // 2, 108, 0.869, 0.60),
    "h100-sxm": _Spec(80 * GiB, _H100, 360.0, 48.0, 3.35e12, 1 * GiB, GiB // 2, 132, 0.803, 0.35),
    "h100-96g-hbm2e-500w": _Spec(96 * GiB, _H100_500W, 360.0, 48.0, 2.4e12, 1 * GiB, GiB // 2, 132, 0.803, 0.35),
    "h200": _Spec(141 * 10**9, _H100, 360.0, 48.0, 4.8e12, 1 * GiB, GiB // 2, 132, 0.838, 0.35),
    "cpu-gloo": _Spec(24 * GiB, {"bf16": 0.48, "fp16": 0.1, "fp32": 0.11}, 1.6, 1.6, 8.0e9, GiB // 4, 0,
                      backend="gloo", mamf=1.0, overlap_slowdown=1.9, cpu_alpha_ms=0.2),
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


def _gloo_collectives(s: _Spec, num_nodes: int, gpus_per_node: int) -> tuple[Collective, ...]:
    """cpu-gloo: the measured alpha and bus bandwidth at every group size (same model)."""
    from galvatron.profiles.collectives import algorithm_gbps, group_sizes

    out = []
    for n in group_sizes(num_nodes * gpus_per_node, gpus_per_node):
        for op in Op:
            if op is Op.P2P and n != 2:
                continue
            pls = ([Placement.CONSECUTIVE, Placement.STRIDED] if n <= gpus_per_node else [])
            if num_nodes > 1 or op is Op.P2P:
                pls.append(Placement.INTER_NODE)
            for pl in pls:
                bus = s.inter_bus_gbps if pl is Placement.INTER_NODE else s.intra_bus_gbps
                out.append(Collective(op, n, pl, s.cpu_alpha_ms, algorithm_gbps(op, n, bus)))
    return tuple(out)


def hardware_preset(name: str, num_nodes: int = 1, gpus_per_node: int = 8) -> HardwareProfile:
    """An analytic :class:`HardwareProfile` for ``num_nodes`` x ``gpus_per_node`` devices (any
    counts: collectives for every group size the world can form)."""
    if name not in _PRESETS:
        raise ValueError(f"hardware preset {name!r} is unknown; accepted: {', '.join(_PRESETS)}")
    for field_name, v in (("num_nodes", num_nodes), ("gpus_per_node", gpus_per_node)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{field_name} must be an integer >= 1, got {v!r}")
    s = _PRESETS[name]
    memory = s.memory_bytes // gpus_per_node if name == "cpu-gloo" else s.memory_bytes
    if s.backend == "gloo":
        colls, rings = _gloo_collectives(s, num_nodes, gpus_per_node), 1
    else:
        topo = Topology(s.intra_bus_gbps, s.inter_bus_gbps, nics_per_node=gpus_per_node)
        colls, rings = topology_collectives(topo, num_nodes, gpus_per_node), topo.inter_node_rings(gpus_per_node)
    slowdown = s.overlap_slowdown or 1.0 + 16.0 / s.num_sms
    return HardwareProfile(
        num_nodes=num_nodes, gpus_per_node=gpus_per_node, device_memory_bytes=memory,
        collectives=colls, name=name, backend=s.backend, overlap_slowdown=slowdown,
        optimizer_ms_per_param=28.0 / s.memory_bandwidth * 1e3,
        framework_overhead_bytes=s.framework_overhead_bytes, comm_buffer_bytes=s.comm_buffer_bytes,
        inter_node_rings=rings, peak_tflops=dict(s.peak_tflops), matmul_efficiency=s.mamf,
        num_sms=s.num_sms, memory_bandwidth_gbps=s.memory_bandwidth / 1e9, attention_efficiency=s.attention,
        source="preset",
    ).validate()
