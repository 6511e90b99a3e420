"""Import and export of Galvatron-2 plan files (``galvatron_config_*.json``).

Field mapping (Galvatron-2 -> ours):

==========================  =========================================================
``pp_deg``                  ``pp``
``tp_sizes_enc``            per layer: ``tp``, or the Ulysses ``sp`` when ``use_sp`` is 1
``use_sp``                  per layer: 1 = the degree is Ulysses (``sp_kind='ulysses'``)
``tp_consecutive_flags``    per layer: ``tp_consecutive``
``dp_types_enc``            per layer: 1 = ``zero3``, 0 = ``default_dp_type``
``default_dp_type``         ``ddp`` | ``zero2``
``checkpoint``              per layer: 1 = ``full``, 0 = ``none`` (no ``selective``)
``global_bsz`` / ``chunks`` ``global_batch_size`` / ``num_microbatches``
``pp_division``             ``stage_layers``
``pipeline_type``           ``gpipe`` | ``pipedream_flush`` (= ``1f1b``)
``vtp`` / ``vsp``           embedding/LM-head degree, and 1 = that degree is Ulysses
``vocab_sdp`` / ``embed_sdp``  1 = embedding/LM-head is ``zero3`` (its runtime reads
                            ``vocab_sdp``, its search writes ``embed_sdp``: both are written)
``sequence_parallel``       (optional) Megatron-SP on every tp > 1 layer and the embedding
==========================  =========================================================

Megatron-SP: Galvatron-2's runtime takes it from its training arguments (on by default), never
from the plan file, and applies it to every tp > 1 layer. So a file without a
``sequence_parallel`` key imports with Megatron-SP on its tp > 1 layers unless the caller says
otherwise (``megatron_sp=False``, CLI ``--no-megatron-sp``); the export always writes the key.

What the format cannot express is refused on export with the field named: interleaved 1F1B,
ZeRO-1, ddp and zero2 in one plan, tp combined with Ulysses in one layer, Megatron-SP on some
tp layers only, and strided (non-adjacent) tp ranks on the embedding (there is no flag for it).
The dp type of a layer with a single replica (tp * sp = the stage's devices) does not matter
and is written as the default.

The format does not record the world size; it is taken from ``world_size=``, else the
file's ``world_size`` key, else its ``{N}nodes_{G}gpus_per_node`` file name.
"""

from __future__ import annotations

import os
import re
from typing import Any

from galvatron._io import read_json
from galvatron._validate import INT32_MAX, MAX_LAYERS, MAX_WORLD, check_int_like, check_list, short
from galvatron.plan import Checkpoint, DpType, LayerStrategy, Plan, Precision, Schedule, SpKind

_REQUIRED = ("pp_deg", "tp_sizes_enc", "tp_consecutive_flags", "dp_types_enc", "checkpoint",
             "global_bsz", "chunks", "pp_division", "pipeline_type", "default_dp_type")
_PIPELINE_TYPES = {"gpipe": Schedule.GPIPE, "pipedream_flush": Schedule.ONE_F_ONE_B}
_DEFAULT_DP = {"ddp": DpType.DDP, "zero2": DpType.ZERO2}
_WORLD_RE = re.compile(r"(\d+)nodes_(\d+)gpus_per_node")
_PRECISION_RE = re.compile(r"_(bf16|fp16|fp32)(?:[_.]|$)")


def _int_list(d: dict[str, Any], key: str) -> list[int]:
    raw = d[key]
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return [check_int_like(raw, key, 0)]
    if isinstance(raw, list):
        items = raw
    elif isinstance(raw, str):
        if raw.count(",") >= MAX_LAYERS:
            raise ValueError(f"{key}: more than {MAX_LAYERS} entries")
        items = [x.strip() for x in raw.split(",") if x.strip() != ""]
    else:
        raise ValueError(f"{key}: expected a comma-joined string of integers, got {short(raw)}")
    check_list(items, key)
    try:
        return [check_int_like(x, f"{key}[{i}]", 0) for i, x in enumerate(items)]
    except ValueError as e:
        raise ValueError(f"{key}: expected a comma-joined string of integers ({e})") from None


def _flag(value: int, key: str, i: int) -> bool:
    if value not in (0, 1):
        raise ValueError(f"{key}[{i}]: expected 0 or 1, got {value}")
    return value == 1


def _int_field(d: dict[str, Any], key: str, default: int | None = None, lo: int = 1) -> int:
    raw = d.get(key, default)
    if raw is None:
        raise ValueError(f"{key}: missing")
    try:
        return check_int_like(raw, key, lo)
    except ValueError:
        raise ValueError(f"{key}: expected an integer from {lo} to {INT32_MAX}, got {short(raw)}") from None


def world_size_from_name(path: str | os.PathLike[str]) -> int | None:
    m = _WORLD_RE.search(os.path.basename(os.fspath(path)))
    return int(m.group(1)) * int(m.group(2)) if m else None


def plan_from_galvatron_dict(
    d: Any, world_size: int, megatron_sp: bool | None = None, precision: Precision | str = "bf16"
) -> Plan:
    """Build a :class:`Plan` from a parsed Galvatron-2 plan dict."""
    if not isinstance(d, dict):
        raise ValueError(f"a Galvatron-2 plan must be a JSON object, got {type(d).__name__}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"missing Galvatron-2 plan keys: {', '.join(missing)}")
    degrees = _int_list(d, "tp_sizes_enc")
    n = len(degrees)
    per_layer = {}
    for key in ("tp_consecutive_flags", "dp_types_enc", "checkpoint", "use_sp"):
        vals = _int_list(d, key) if key in d else [0] * n
        if len(vals) != n:
            raise ValueError(f"{key} has {len(vals)} entries but tp_sizes_enc has {n}")
        per_layer[key] = vals
    default_dp = _DEFAULT_DP.get(d["default_dp_type"]) if isinstance(d["default_dp_type"], str) else None
    if default_dp is None:
        raise ValueError(f"default_dp_type: {short(d['default_dp_type'])} is not accepted; accepted: 'ddp', 'zero2'")
    schedule = _PIPELINE_TYPES.get(d["pipeline_type"]) if isinstance(d["pipeline_type"], str) else None
    if schedule is None:
        raise ValueError(f"pipeline_type: {short(d['pipeline_type'])} is not accepted; accepted: 'gpipe', 'pipedream_flush'")
    if megatron_sp is None:  # its runtime's default: on
        value = _int_field(d, "sequence_parallel", 1, lo=0)
        if value not in (0, 1):
            raise ValueError(f"sequence_parallel: expected 0 or 1, got {value}")
        megatron_sp = value == 1

    def strategy(degree: int, ulysses: bool, zero3: bool, ckpt: bool, consec: bool) -> LayerStrategy:
        if ulysses and degree > 1:
            return LayerStrategy(sp=degree, sp_kind=SpKind.ULYSSES, checkpoint=ckpt,
                                 dp_type=DpType.ZERO3 if zero3 else default_dp, tp_consecutive=consec)
        kind = SpKind.MEGATRON if (megatron_sp and degree > 1) else SpKind.NONE
        return LayerStrategy(tp=degree, sp_kind=kind, checkpoint=ckpt,
                             dp_type=DpType.ZERO3 if zero3 else default_dp, tp_consecutive=consec)

    layers = []
    for i, deg in enumerate(degrees):
        if deg < 1:
            raise ValueError(f"tp_sizes_enc[{i}] must be >= 1, got {deg}")
        layers.append(strategy(
            deg,
            _flag(per_layer["use_sp"][i], "use_sp", i),
            _flag(per_layer["dp_types_enc"][i], "dp_types_enc", i),
            _flag(per_layer["checkpoint"][i], "checkpoint", i),
            _flag(per_layer["tp_consecutive_flags"][i], "tp_consecutive_flags", i),
        ))
    vtp = _int_field(d, "vtp", 1)
    embedding = strategy(vtp, bool(_flag(_int_field(d, "vsp", 0, lo=0), "vsp", 0)), _embedding_sdp(d), False, True)
    plan = Plan(
        world_size=world_size,
        layers=tuple(layers),
        pp=_int_field(d, "pp_deg"),
        stage_layers=tuple(_int_list(d, "pp_division")),
        schedule=schedule,
        num_microbatches=_int_field(d, "chunks"),
        global_batch_size=_int_field(d, "global_bsz"),
        embedding=embedding,
        precision=precision,
    )
    return plan.validate()


def _embedding_sdp(d: dict[str, Any]) -> bool:
    """``vocab_sdp`` (what its runtime reads) or ``embed_sdp`` (what its search writes)."""
    values = {k: _int_field(d, k, lo=0) for k in ("vocab_sdp", "embed_sdp") if k in d}
    for k, v in values.items():
        if v not in (0, 1):
            raise ValueError(f"{k}: expected 0 or 1, got {v}")
    if len(set(values.values())) > 1:
        raise ValueError(f"vocab_sdp={values['vocab_sdp']} and embed_sdp={values['embed_sdp']} disagree; "
                         "they are the same setting (ZeRO-3 on the embedding/LM-head)")
    return bool(next(iter(values.values()), 0))


def plan_from_galvatron_file(
    path: str | os.PathLike[str], world_size: int | None = None, megatron_sp: bool | None = None
) -> Plan:
    p = os.fspath(path)
    d = read_json(p)
    if world_size is None and isinstance(d, dict) and "world_size" in d:
        try:
            world_size = check_int_like(d["world_size"], "world_size", 1, MAX_WORLD)
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
    if world_size is None:
        world_size = world_size_from_name(p)
    if world_size is None:
        raise ValueError(
            f"{p}: the world size is unknown: Galvatron-2 plans do not always record it. Pass "
            "world_size=N (CLI: --world-size N), add a 'world_size' key, or keep the "
            "'{N}nodes_{G}gpus_per_node' part of the file name"
        )
    m = _PRECISION_RE.search(os.path.basename(p))
    precision = m.group(1) if m else "bf16"
    try:
        return plan_from_galvatron_dict(d, world_size, megatron_sp=megatron_sp, precision=precision)
    except ValueError as e:
        raise ValueError(f"{p}: invalid Galvatron-2 plan: {e}") from None


def _encode_strategy(s: LayerStrategy, where: str) -> tuple[int, int]:
    """(degree, use_sp flag) of one strategy; tp and Ulysses cannot be combined in the format."""
    if s.sp_kind is SpKind.ULYSSES:
        if s.tp > 1:
            raise ValueError(f"{where}: tp={s.tp} with Ulysses sp={s.sp} cannot be expressed in the "
                             "Galvatron-2 format (one degree per layer)")
        return s.sp, 1
    return s.tp, 0


def plan_to_galvatron_dict(plan: Plan) -> dict[str, Any]:
    """Galvatron-2 plan dict; ``ValueError`` for what that format cannot express."""
    plan.validate()
    if plan.schedule is Schedule.INTERLEAVED_1F1B:
        raise ValueError("schedule: 'interleaved_1f1b' cannot be expressed in the Galvatron-2 format "
                         "(accepted there: gpipe, 1f1b)")
    per_stage = plan.devices_per_stage
    replicated = [s for s in (*plan.layers, plan.embedding) if s.tp * s.sp < per_stage]
    non_zero3 = {s.dp_type for s in replicated if s.dp_type is not DpType.ZERO3}
    if DpType.ZERO1 in non_zero3:
        raise ValueError("dp_type: 'zero1' cannot be expressed in the Galvatron-2 format "
                         "(accepted there: ddp, zero2, zero3)")
    if len(non_zero3) > 1:
        raise ValueError("dp_type: the Galvatron-2 format allows zero3 plus one default type per "
                         "plan, but this plan mixes ddp and zero2")
    default_dp = non_zero3.pop() if non_zero3 else DpType.ZERO2
    tp_layers = [s for s in (*plan.layers, plan.embedding) if s.tp > 1]
    msp = {s.sp_kind is SpKind.MEGATRON for s in tp_layers}
    if len(msp) > 1:
        raise ValueError("sp_kind: the Galvatron-2 format has one Megatron-SP switch for all tp "
                         "layers, but this plan uses it on some tp layers only")
    for i, s in enumerate(plan.layers):
        if s.checkpoint is Checkpoint.SELECTIVE:
            raise ValueError(f"layers[{i}].checkpoint: 'selective' cannot be expressed in the "
                             "Galvatron-2 format (accepted there: none = 0, full = 1)")
    e = plan.embedding
    if 1 < e.tp * e.sp < per_stage and not e.tp_consecutive:  # strided differs only with dp > 1
        raise ValueError("embedding.tp_consecutive: the Galvatron-2 format has no strided-rank flag for "
                         "the embedding (vtp/vsp always use adjacent ranks), so this plan's strided "
                         "embedding would be lost; search with --galvatron2-compatible (adjacent ranks)")
    encoded = [_encode_strategy(s, f"layers[{i}]") for i, s in enumerate(plan.layers)]
    vdeg, vsp = _encode_strategy(plan.embedding, "embedding")

    def join(values: Any) -> str:
        return ",".join(str(int(v)) for v in values)

    out: dict[str, Any] = {
        "pp_deg": plan.pp,
        "tp_sizes_enc": join(e[0] for e in encoded),
        "tp_consecutive_flags": join(s.tp_consecutive for s in plan.layers),
        "dp_types_enc": join(s.dp_type is DpType.ZERO3 for s in plan.layers),
        "use_sp": join(e[1] for e in encoded),
        "checkpoint": join(s.checkpoint is Checkpoint.FULL for s in plan.layers),
        "global_bsz": plan.global_batch_size,
        "chunks": plan.num_microbatches,
        "pp_division": join(plan.stage_layers),
        "pipeline_type": "gpipe" if plan.schedule is Schedule.GPIPE else "pipedream_flush",
        "default_dp_type": default_dp.value,
        "vtp": vdeg,
        "vsp": vsp,
        "embed_sdp": int(plan.embedding.dp_type is DpType.ZERO3),
        "vocab_sdp": int(plan.embedding.dp_type is DpType.ZERO3),
        "sequence_parallel": int(msp != {False}),
        "world_size": plan.world_size,
    }
    return out
