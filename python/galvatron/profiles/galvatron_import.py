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
from galvatron._validate import (
    MAX_BYTES,
    MAX_BYTES_PER_SAMPLE,
    MAX_LAYERS,
    MAX_MS,
    MAX_PARAMS,
    MAX_SEQ_LEN,
    check_float,
    check_int,
)
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


def _object(path: str) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a Galvatron-2 profile must be a JSON object, got {type(data).__name__}")
    return data


def _number(path: str, key: str, value: Any, lo: float, hi: float, *, lo_open: bool = True) -> float:
    try:
        return check_float(value, key, lo, hi, lo_open=lo_open)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def hardware_from_galvatron(path: Any, num_nodes: int = 1, gpus_per_node: int = 8,
                            device_memory_gb: float = 80.0) -> HardwareProfile:
    """Galvatron-2's hardware profile files of a directory (or a list of files)."""
    check_float(device_memory_gb, "device_memory_gb", 0.0, MAX_BYTES / 2**30, lo_open=True)
    files = _files(path)
    ar_file = _pick(files, "allreduce_bandwidth", num_nodes, gpus_per_node)
    if ar_file is None:
        raise ValueError(f"{path}: no allreduce_bandwidth_*.json found (Galvatron-2 hardware profile)")
    ar = _object(ar_file)
    colls: list[Collective] = []
    pat = re.compile(r"allreduce_size_(\d{1,7})_consec_([01])$")
    for key, bus_mb_ms in ar.items():
        m = pat.match(key)
        if not m:
            continue
        n, consec = int(m.group(1)), m.group(2) == "1"
        if n < 2:
            continue
        bus = _number(ar_file, key, bus_mb_ms, 0.0, 1e7) * MB_PER_MS_IN_GBPS
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
        p2p = _object(p2p_file)
        bw = [_number(p2p_file, k, v, 0.0, 1e7) * MB_PER_MS_IN_GBPS for k, v in p2p.items()
              if k.startswith("pp_size_")]
        if bw:
            slowest = min(bw)
            for pl in (Placement.CONSECUTIVE, Placement.STRIDED, Placement.INTER_NODE):
                colls.append(Collective(Op.P2P, 2, pl, 0.0, slowest))
    sp_file = _pick(files, "sp_time", num_nodes, gpus_per_node)
    if sp_file is not None:
        colls = _apply_sp_times(_object(sp_file), colls, gpus_per_node, sp_file)
    overlap = 1.0
    ov_file = _pick(files, "overlap_coefficient", num_nodes, gpus_per_node)
    if ov_file is not None:
        ov = _object(ov_file)
        if "overlap_coe" not in ov:
            raise ValueError(f"{ov_file}: overlap_coe: missing")
        # Measured ratios a little under 1 are noise: no slowdown. NaN, Infinity, <= 0 are refused.
        overlap = max(1.0, _number(ov_file, "overlap_coe", ov["overlap_coe"], 0.0, 100.0))
    try:
        return HardwareProfile(num_nodes=num_nodes, gpus_per_node=gpus_per_node,
                               device_memory_bytes=int(device_memory_gb * 2**30), collectives=tuple(colls),
                               name=f"galvatron-{num_nodes}x{gpus_per_node}", overlap_slowdown=overlap,
                               source="galvatron").validate()
    except ValueError as e:
        raise ValueError(f"{path}: Galvatron-2 hardware profile: {e}") from None


def _apply_sp_times(sp: dict[str, Any], colls: list[Collective], gpn: int, path: str) -> list[Collective]:
    """Replace all-to-all (and fill alpha of all-reduce) entries with fits of measured times."""
    pat = re.compile(r"(all2all|allreduce)_size_(\d{1,7})_(\d{1,7})MB_time$")
    series: dict[tuple[str, int], dict[int, tuple[float, float]]] = {}
    for key, ms in sp.items():
        m = pat.match(key)
        if m:
            size = int(m.group(3)) * MB
            pts = series.setdefault((m.group(1), int(m.group(2))), {})
            if size in pts:
                raise ValueError(f"{path}: {key}: a second time for {m.group(3)} MB of this collective")
            pts[size] = (float(size), _number(path, key, ms, 0.0, MAX_MS, lo_open=False))
    out = list(colls)
    for (kind, n), by_size in series.items():
        pts = list(by_size.values())
        if n < 2 or len(pts) < 2:
            continue
        op = Op.ALL_TO_ALL if kind == "all2all" else Op.ALL_REDUCE
        alpha, bw = _fit(sorted(pts))
        placement = Placement.CONSECUTIVE if n <= gpn else Placement.INTER_NODE
        out = [c for c in out if not (c.op is op and c.group_size == n and c.placement is placement)]
        out.append(Collective(op, n, placement, alpha, bw, tuple(sorted(pts))))
    return out


def _per_sample_fit(comp: dict[str, Any], prefix: str, seq_len: int, path: str) -> tuple[float, float]:
    """Fit total forward ms = fixed + slope * batch from '{prefix}_bsz{B}_seq{S}' per-sample values."""
    pat = re.compile(re.escape(prefix) + r"_bsz(\d{1,9})_seq(\d{1,10})$")
    by_batch: dict[int, str] = {}
    pts = []
    for key, v in comp.items():
        m = pat.match(key)
        if m and int(m.group(2)) == seq_len:
            b = int(m.group(1))
            if b < 1:
                raise ValueError(f"{path}: {key}: batch size must be >= 1")
            if b in by_batch:
                raise ValueError(f"{path}: {key} and {by_batch[b]} both give batch size {b}; keep one")
            by_batch[b] = key
            pts.append((float(b), _number(path, key, v, 0.0, MAX_MS, lo_open=False) * b))
    if not pts:
        raise ValueError(f"{path}: no '{prefix}_bsz*_seq{seq_len}' entries in the computation profile")
    if len(pts) == 1:
        return 0.0, pts[0][1] / pts[0][0]
    n = len(pts)
    mx = sum(b for b, _ in pts) / n
    my = sum(t for _, t in pts) / n
    slope = sum((b - mx) * (t - my) for b, t in pts) / sum((b - mx) ** 2 for b, _ in pts)
    if not slope > 0:
        raise ValueError(f"{path}: the '{prefix}' times do not grow with the batch size (fitted "
                         f"{slope:.3g} ms per sample); not a usable computation profile")
    return max(0.0, my - slope * mx), slope


def _shape_from_zoo(model: str, num_layers: int | None, num_heads: int | None,
                    hidden_size: int | None) -> tuple[int | None, int | None, int | None]:
    """Fill missing shape fields from the model zoo when `model` is one of its names."""
    from galvatron import models

    if model not in models.list(aliases=True):
        return num_layers, num_heads, hidden_size
    cfg = models.get_config(model)
    return (num_layers or getattr(cfg, "num_layers", None), num_heads or getattr(cfg, "num_heads", None),
            hidden_size or getattr(cfg, "hidden_size", None))


def _entry(d: Any, key: str, path: str, where: str) -> Any:
    """d[key] of an object, or a ValueError naming the file and the key."""
    if not isinstance(d, dict):
        raise ValueError(f"{path}: {where} must be a JSON object, got {type(d).__name__}")
    if key not in d:
        raise ValueError(f"{path}: {where}: missing {key!r}")
    return d[key]


def _degree_table(d: Any, path: str, where: str, skip: tuple[str, ...] = ()) -> dict[int, float]:
    """{"1": MB, "2": MB, ...} -> {1: MB, ...}; needs degree 1."""
    if not isinstance(d, dict):
        raise ValueError(f"{path}: {where} must be a JSON object keyed by degree, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        if k in skip:
            continue
        if not (isinstance(k, str) and k.isdigit() and len(k) <= 6 and int(k) >= 1):
            raise ValueError(f"{path}: {where}: key {k[:40]!r} is not a degree (1, 2, 4, ...)")
        out[int(k)] = _number(path, f"{where}.{k}", v, 0.0, float(MAX_BYTES_PER_SAMPLE) / MB, lo_open=False)
    if 1 not in out:
        raise ValueError(f"{path}: {where}: no entry for degree 1 (tp=1); it has {sorted(out)}")
    return out


def model_from_galvatron(computation_json: Any, memory_json: Any, seq_len: int,
                         model: str = "galvatron-model", num_layers: int | None = None,
                         num_heads: int | None = None, hidden_size: int | None = None,
                         precision: str = "bf16") -> ModelProfile:
    """Galvatron-2's computation and memory profiles of one model at ``seq_len``."""
    check_int(seq_len, "seq_len", 1, MAX_SEQ_LEN)
    cpath, where = os.fspath(computation_json), os.fspath(memory_json)
    comp, mem = _object(cpath), _object(where)
    s = str(seq_len)
    layer_key = "layertype_0_sp" if "layertype_0_sp" in mem else "layertype_0"
    first_key = "other_memory_pp_on_first_sp" if "other_memory_pp_on_first_sp" in mem else "other_memory_pp_on_first"
    last_key = "other_memory_pp_on_last_sp" if "other_memory_pp_on_last_sp" in mem else "other_memory_pp_on_last"
    layer = _entry(_entry(mem, layer_key, where, "the memory profile"), s, where, f"{layer_key} (seq_len={seq_len})")
    first = _entry(_entry(mem, first_key, where, "the memory profile"), s, where, f"{first_key} (seq_len={seq_len})")
    last = _entry(_entry(mem, last_key, where, "the memory profile"), s, where, f"{last_key} (seq_len={seq_len})")
    if num_layers is None or num_heads is None or hidden_size is None:
        num_layers, num_heads, hidden_size = _shape_from_zoo(model, num_layers, num_heads, hidden_size)
    if num_layers is None:
        counts = [int(m.group(1)) for k in comp for m in [re.match(r"layernum\[(\d{1,6})\]", k)] if m]
        raise ValueError(f"num_layers is needed (the Galvatron-2 profile measured {sorted(set(counts))}-layer "
                         "models; pass the real model's layer count, or a model name from galvatron.models.list())")
    check_int(num_layers, "num_layers", 1, MAX_LAYERS)
    cb = 4 if precision == "fp32" else 2
    hidden = check_int(hidden_size or 4096, "hidden_size", 1, 2**24)
    heads = check_int(num_heads or 32, "num_heads", 1, 2**20)
    lwhere = f"{layer_key}.{s}"
    act_table = {d: int(v * MB) for d, v in _degree_table(
        _entry(layer, "tp_activation_per_bsz_dict", where, lwhere), where,
        f"{lwhere}.tp_activation_per_bsz_dict", skip=("checkpoint",)).items()}
    param_mb = _number(where, f"{lwhere}.parameter_size", _entry(layer, "parameter_size", where, lwhere),
                       0.0, MAX_PARAMS * 4 / MB, lo_open=False)
    fixed, slope = _per_sample_fit(comp, "layertype_0", seq_len, cpath)
    degrees = sorted(act_table)
    lt = LayerTypeProfile(
        name="layertype_0", param_count=int(param_mb * MB / 4),
        carry_bytes_per_sample=seq_len * hidden * cb, seq_len=seq_len, num_heads=heads, num_kv_heads=heads,
        ulysses_bytes_per_sample=4 * seq_len * hidden * cb,
        fwd_ms_per_sample={d: slope / d for d in degrees}, bwd_ms_per_sample={d: 2 * slope / d for d in degrees},
        fwd_ms_fixed=fixed, bwd_ms_fixed=2 * fixed,
        act_bytes_per_sample={"none": dict(act_table), "megatron": dict(act_table), "ulysses": dict(act_table)},
    )
    efixed, eslope = _per_sample_fit(comp, "layertype_other", seq_len, cpath)
    parts = (("first", first, first_key), ("last", last, last_key))
    states = {k: _degree_table(_entry(part, "model_states", where, f"{key}.{s}"), where, f"{key}.{s}.model_states")
              for k, part, key in parts}
    emb_acts = {k: {d: int(v * MB) for d, v in _degree_table(
        _entry(part, "activation", where, f"{key}.{s}"), where, f"{key}.{s}.activation").items()}
        for k, part, key in parts}
    half = (eslope + efixed) / 2  # embedding and head share the "other" time
    embedding = EmbeddingProfile(
        embed_param_count=int(states["first"][1] * MB / 16), head_param_count=int(states["last"][1] * MB / 16),
        tied_param_count=0, carry_bytes_per_sample=seq_len * hidden * cb, seq_len=seq_len,
        embed_fwd_ms_per_sample={d: half / d for d in degrees}, embed_bwd_ms_per_sample={d: half / d for d in degrees},
        head_fwd_ms_per_sample={d: half / d for d in degrees}, head_bwd_ms_per_sample={d: 2 * half / d for d in degrees},
        embed_act_bytes_per_sample={d: emb_acts["first"].get(d, emb_acts["first"][1] // d) for d in degrees},
        head_act_bytes_per_sample={d: emb_acts["last"].get(d, emb_acts["last"][1] // d) for d in degrees},
    )
    prof = ModelProfile(model=model, seq_len=seq_len, layer_types=[lt], layer_type_of=[0] * num_layers,
                        embedding=embedding, precision=precision, source="galvatron",
                        model_config={"name": model, "num_layers": num_layers})
    try:
        prof.to_tables()
    except ValueError as e:
        raise ValueError(f"{where}: Galvatron-2 model profile: {e}") from None
    return prof


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
