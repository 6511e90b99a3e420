"""Importers of Galvatron-2 profile files into our profile classes.

Hardware (``allreduce_bandwidth_*``, ``p2p_bandwidth_*``, ``sp_time_*``, ``overlap_coefficient``):
bus bandwidths in MB/ms (1 MB/ms = 1.048576 GB/s) become algorithm bandwidths per collective
(all-gather/reduce-scatter from the all-reduce bus bandwidth); ``sp_time`` all-to-all and
all-reduce timings over 1..1024 MB are fitted with least squares to alpha + bytes/bandwidth and
replace the entries derived from bus bandwidths for those group sizes (they are measured times).
``consec_1`` groups are consecutive; ``consec_0`` groups are strided, or inter-node when they
cannot fit in one node.

Model (``computation_profiling_*``, ``memory_profiling_*``): ``layertype_0_bsz{B}_seq{S}`` is
forward ms per sample of one layer; a least-squares line of total time against B gives the
per-sample slope and a fixed part. Galvatron-2 has no backward profile: backward = 2 x forward
(its own assumption). ``parameter_size`` (MB of fp32 per layer) / 4 bytes = parameters;
``tp_activation_per_bsz_dict`` gives MB per sample per tp degree (profiled with Megatron-SP;
used for every sp kind at the same degree) and ``checkpoint``; ``other_memory_pp_on_first`` /
``on_last`` model states (16 bytes per parameter in Galvatron-2) give the embedding and head
parameter counts, and their ``activation`` the embedding/head activations.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Any

from galvatron._io import read_json
from galvatron.profiles.hardware import Collective, HardwareProfile, Op, Placement
from galvatron.profiles.model import EmbeddingProfile, LayerTypeProfile, ModelProfile

MB = 2**20
MB_PER_MS_IN_GBPS = MB / 1e6  # 1 MB/ms = 1.048576 GB/s


def _files(path: str | os.PathLike[str] | list[str]) -> list[str]:
    if isinstance(path, (list, tuple)):
        return [os.fspath(p) for p in path]
    p = os.fspath(path)
    if os.path.isdir(p):
        return sorted(glob.glob(os.path.join(p, "*.json")))
    return [p]


def _pick(files: list[str], prefix: str, num_nodes: int, gpn: int) -> str | None:
    exact = [f for f in files if os.path.basename(f).startswith(prefix) and f"{num_nodes}nodes_{gpn}gpus" in f]
    anyf = [f for f in files if os.path.basename(f).startswith(prefix)]
    return (exact or anyf or [None])[0]


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares t = alpha + bytes * slope; returns (alpha_ms >= 0, bandwidth_gbps)."""
    n = len(points)
    mx = sum(b for b, _ in points) / n
    my = sum(t for _, t in points) / n
    var = sum((b - mx) ** 2 for b, _ in points)
    slope = sum((b - mx) * (t - my) for b, t in points) / var if var > 0 else my / max(mx, 1.0)
    slope = max(slope, 1e-15)
    alpha = max(0.0, my - slope * mx)
    return alpha, 1.0 / (slope * 1e6)


def hardware_from_galvatron(path: Any, num_nodes: int = 1, gpus_per_node: int = 8,
                            device_memory_gb: float = 80.0) -> HardwareProfile:
    """Galvatron-2's hardware profile files of a directory (or a list of files)."""
    files = _files(path)
    ar_file = _pick(files, "allreduce_bandwidth", num_nodes, gpus_per_node)
    if ar_file is None:
        raise ValueError(f"{path}: no allreduce_bandwidth_*.json found (Galvatron-2 hardware profile)")
    ar = read_json(ar_file)
    colls: list[Collective] = []
    pat = re.compile(r"allreduce_size_(\d+)_consec_([01])$")
    for key, bus_mb_ms in ar.items():
        m = pat.match(key)
        if not m:
            continue
        n, consec = int(m.group(1)), m.group(2) == "1"
        if n < 2:
            continue
        bus = float(bus_mb_ms) * MB_PER_MS_IN_GBPS
        if n > gpus_per_node or (not consec and num_nodes > 1):
            placement = Placement.INTER_NODE
        else:
            placement = Placement.CONSECUTIVE if consec else Placement.STRIDED
        for op, factor in ((Op.ALL_REDUCE, n / (2 * (n - 1))), (Op.ALL_GATHER, n / (n - 1)),
                           (Op.REDUCE_SCATTER, n / (n - 1)), (Op.ALL_TO_ALL, n / (n - 1))):
            if placement is Placement.INTER_NODE and any(
                    c.op is op and c.group_size == n and c.placement is placement for c in colls):
                continue
            colls.append(Collective(op, n, placement, 0.0, bus * factor))
    p2p_file = _pick(files, "p2p_bandwidth", num_nodes, gpus_per_node)
    if p2p_file is not None:
        p2p = read_json(p2p_file)
        bw = [float(v) * MB_PER_MS_IN_GBPS for k, v in p2p.items() if k.startswith("pp_size_")]
        if bw:
            slowest = min(bw)
            for pl in (Placement.CONSECUTIVE, Placement.STRIDED, Placement.INTER_NODE):
                colls.append(Collective(Op.P2P, 2, pl, 0.0, slowest))
    sp_file = _pick(files, "sp_time", num_nodes, gpus_per_node)
    if sp_file is not None:
        colls = _apply_sp_times(read_json(sp_file), colls, gpus_per_node)
    overlap = 1.0
    ov_file = _pick(files, "overlap_coefficient", num_nodes, gpus_per_node)
    if ov_file is not None:
        overlap = max(1.0, float(read_json(ov_file).get("overlap_coe", 1.0)))
    return HardwareProfile(num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                           device_memory_bytes=int(device_memory_gb * 2**30), collectives=tuple(colls),
                           name=f"galvatron-{num_nodes}x{gpus_per_node}", overlap_slowdown=overlap,
                           source="galvatron").validate()


def _apply_sp_times(sp: dict[str, Any], colls: list[Collective], gpn: int) -> list[Collective]:
    """Replace all-to-all (and fill alpha of all-reduce) entries with fits of measured times."""
    pat = re.compile(r"(all2all|allreduce)_size_(\d+)_(\d+)MB_time$")
    series: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for key, ms in sp.items():
        m = pat.match(key)
        if m:
            series.setdefault((m.group(1), int(m.group(2))), []).append((int(m.group(3)) * MB, float(ms)))
    out = list(colls)
    for (kind, n), pts in series.items():
        if n < 2 or len(pts) < 2:
            continue
        op = Op.ALL_TO_ALL if kind == "all2all" else Op.ALL_REDUCE
        alpha, bw = _fit(sorted(pts))
        placement = Placement.CONSECUTIVE if n <= gpn else Placement.INTER_NODE
        out = [c for c in out if not (c.op is op and c.group_size == n and c.placement is placement)]
        out.append(Collective(op, n, placement, alpha, bw, tuple(sorted(pts))))
    return out


def _per_sample_fit(comp: dict[str, Any], prefix: str, seq_len: int) -> tuple[float, float]:
    """Fit total forward ms = fixed + slope * batch from '{prefix}_bsz{B}_seq{S}' per-sample values."""
    pat = re.compile(re.escape(prefix) + r"_bsz(\d+)_seq(\d+)$")
    pts = []
    for key, v in comp.items():
        m = pat.match(key)
        if m and int(m.group(2)) == seq_len:
            b = int(m.group(1))
            pts.append((float(b), float(v) * b))
    if not pts:
        raise ValueError(f"no '{prefix}_bsz*_seq{seq_len}' entries in the computation profile")
    if len(pts) == 1:
        return 0.0, pts[0][1] / pts[0][0]
    n = len(pts)
    mx = sum(b for b, _ in pts) / n
    my = sum(t for _, t in pts) / n
    slope = sum((b - mx) * (t - my) for b, t in pts) / sum((b - mx) ** 2 for b, _ in pts)
    return max(0.0, my - slope * mx), slope


def _shape_from_zoo(model: str, num_layers: int | None, num_heads: int | None,
                    hidden_size: int | None) -> tuple[int | None, int | None, int | None]:
    """Fill missing shape fields from the model zoo when `model` is one of its names."""
    from galvatron import models

    if model not in models.list():
        return num_layers, num_heads, hidden_size
    cfg = models.get_config(model)
    return (num_layers or getattr(cfg, "num_layers", None), num_heads or getattr(cfg, "num_heads", None),
            hidden_size or getattr(cfg, "hidden_size", None))


def model_from_galvatron(computation_json: Any, memory_json: Any, seq_len: int,
                         model: str = "galvatron-model", num_layers: int | None = None,
                         num_heads: int | None = None, hidden_size: int | None = None,
                         precision: str = "bf16") -> ModelProfile:
    """Galvatron-2's computation and memory profiles of one model at ``seq_len``."""
    comp, mem = read_json(computation_json), read_json(memory_json)
    where = os.fspath(memory_json)
    try:
        layer = mem["layertype_0_sp"][str(seq_len)] if "layertype_0_sp" in mem else mem["layertype_0"][str(seq_len)]
        first = (mem.get("other_memory_pp_on_first_sp") or mem["other_memory_pp_on_first"])[str(seq_len)]
        last = (mem.get("other_memory_pp_on_last_sp") or mem["other_memory_pp_on_last"])[str(seq_len)]
    except KeyError as e:
        raise ValueError(f"{where}: missing {e.args[0]!r} for seq_len={seq_len}") from None
    if num_layers is None or num_heads is None or hidden_size is None:
        num_layers, num_heads, hidden_size = _shape_from_zoo(model, num_layers, num_heads, hidden_size)
    if num_layers is None:
        counts = [int(m.group(1)) for k in comp for m in [re.match(r"layernum\[(\d+)\]", k)] if m]
        raise ValueError(f"num_layers is needed (the Galvatron-2 profile measured {sorted(set(counts))}-layer "
                         "models; pass the real model's layer count, or a model name from galvatron.models.list())")
    cb = 4 if precision == "fp32" else 2
    hidden = hidden_size or 4096
    heads = num_heads or 32
    acts = {int(k): float(v) for k, v in layer["tp_activation_per_bsz_dict"].items() if k != "checkpoint"}
    act_table = {d: int(v * MB) for d, v in acts.items()}
    fixed, slope = _per_sample_fit(comp, "layertype_0", seq_len)
    degrees = sorted(act_table)
    lt = LayerTypeProfile(
        name="layertype_0", param_count=int(float(layer["parameter_size"]) * MB / 4),
        carry_bytes_per_sample=seq_len * hidden * cb, seq_len=seq_len, num_heads=heads, num_kv_heads=heads,
        ulysses_bytes_per_sample=4 * seq_len * hidden * cb,
        fwd_ms_per_sample={d: slope / d for d in degrees}, bwd_ms_per_sample={d: 2 * slope / d for d in degrees},
        fwd_ms_fixed=fixed, bwd_ms_fixed=2 * fixed,
        act_bytes_per_sample={"none": dict(act_table), "megatron": dict(act_table), "ulysses": dict(act_table)},
    )
    efixed, eslope = _per_sample_fit(comp, "layertype_other", seq_len)
    states = {k: {int(d): float(v) for d, v in part["model_states"].items()} for k, part in
              (("first", first), ("last", last))}
    emb_acts = {k: {int(d): int(float(v) * MB) for d, v in part["activation"].items()} for k, part in
                (("first", first), ("last", last))}
    half = (eslope + efixed) / 2  # embedding and head share the "other" time
    embedding = EmbeddingProfile(
        embed_param_count=int(states["first"][1] * MB / 16), head_param_count=int(states["last"][1] * MB / 16),
        tied_param_count=0, carry_bytes_per_sample=seq_len * hidden * cb, seq_len=seq_len,
        embed_fwd_ms_per_sample={d: half / d for d in degrees}, embed_bwd_ms_per_sample={d: half / d for d in degrees},
        head_fwd_ms_per_sample={d: half / d for d in degrees}, head_bwd_ms_per_sample={d: 2 * half / d for d in degrees},
        embed_act_bytes_per_sample={d: emb_acts["first"].get(d, emb_acts["first"][1] // d) for d in degrees},
        head_act_bytes_per_sample={d: emb_acts["last"].get(d, emb_acts["last"][1] // d) for d in degrees},
    )
    return ModelProfile(model=model, seq_len=seq_len, layer_types=[lt], layer_type_of=[0] * num_layers,
                        embedding=embedding, precision=precision, source="galvatron",
                        model_config={"name": model, "num_layers": num_layers})


_LAYOUT = re.compile(r"_(\d+)nodes_(\d+)gpus_per_node")


def layouts_in(path: str | os.PathLike[str]) -> list[tuple[int, int]]:
    """The ``(num_nodes, gpus_per_node)`` layouts named by a Galvatron-2 profile directory's
    hardware file names (``allreduce_bandwidth_{N}nodes_{G}gpus_per_node.json``, ...)."""
    found = set()
    for f in _files(path):
        m = _LAYOUT.search(os.path.basename(f))
        if m and not os.path.basename(f).startswith("galvatron_config"):
            found.add((int(m.group(1)), int(m.group(2))))
    return sorted(found)
