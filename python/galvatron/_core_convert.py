"""Conversion between Python values and the structs of the compiled core (``galvatron._C``).

Internal: the one place where an enum, a plan or a profile becomes a core struct (and a core
plan becomes a :class:`~galvatron.plan.Plan`). Everything that hands data to the core imports
from here: ``galvatron.search`` (plans, strategies, options' enums), the profile classes
(``HardwareProfile.to_tables``, ``ModelProfile.to_tables``) and tests that call the core
directly.

Enums map by member name: ``DpType.ZERO2`` <-> ``_C.DpType.ZERO2``, ``Op.ALL_REDUCE`` <->
``_C.Op.ALL_REDUCE`` (``tests/core/test_core_convert.py`` checks that both sides have the same
members). Profile tables are dicts keyed by the shard degree in Python and dense lists over the
sorted degrees in the core; per-sp-kind tables are rows in :class:`SpKind` order, the core's
order of ``SpKind``.

Validation stays with the data: the profile classes check their fields before converting and
call ``_C.validate_model`` / ``_C.validate_hardware`` on the result.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

from galvatron import _C
from galvatron.plan import Checkpoint, DpType, LayerStrategy, Plan, Precision, Schedule, SpKind

if TYPE_CHECKING:  # the profile modules import this one
    from galvatron.profiles.hardware import HardwareProfile
    from galvatron.profiles.model import EmbeddingProfile, LayerTypeProfile, ModelProfile


def _by_name(py_enum: type[enum.Enum], c_enum: Any) -> dict[Any, Any]:
    """``{python member: core member}`` for two enums with the same member names."""
    members = dict(c_enum.__members__)
    assert set(members) == {m.name for m in py_enum}, (py_enum, sorted(members))  # kept in step
    return {m: members[m.name] for m in py_enum}


DP_TYPE = _by_name(DpType, _C.DpType)
SP_KIND = _by_name(SpKind, _C.SpKind)
SCHEDULE = _by_name(Schedule, _C.Schedule)
CHECKPOINT = _by_name(Checkpoint, _C.Checkpoint)
_DP_TYPE_BACK = {v: k for k, v in DP_TYPE.items()}
_SP_KIND_BACK = {v: k for k, v in SP_KIND.items()}
_SCHEDULE_BACK = {v: k for k, v in SCHEDULE.items()}
_CHECKPOINT_BACK = {v: k for k, v in CHECKPOINT.items()}
# profiles.hardware.Op / Placement member name -> core member (that module imports this one)
OP_BY_NAME = dict(_C.Op.__members__)
PLACEMENT_BY_NAME = dict(_C.Placement.__members__)
SP_KIND_ROWS = tuple(SpKind)  # row order of the per-sp-kind tables (the core's SpKind order)


# ---------------------------------------------------------------------------- plans


def strategy_to_c(s: LayerStrategy) -> Any:
    c = _C.Strategy()
    c.tp, c.sp, c.sp_kind, c.dp_type = s.tp, s.sp, SP_KIND[s.sp_kind], DP_TYPE[s.dp_type]
    c.checkpoint, c.tp_consecutive = CHECKPOINT[s.checkpoint], s.tp_consecutive
    return c


def strategy_from_c(c: Any) -> LayerStrategy:
    return LayerStrategy(tp=c.tp, sp=c.sp, sp_kind=_SP_KIND_BACK[c.sp_kind],
                         dp_type=_DP_TYPE_BACK[c.dp_type], checkpoint=_CHECKPOINT_BACK[c.checkpoint],
                         tp_consecutive=c.tp_consecutive)


def plan_to_c(plan: Plan) -> Any:
    p = _C.PlanSpec()
    p.world_size, p.pp, p.schedule = plan.world_size, plan.pp, SCHEDULE[plan.schedule]
    p.virtual_stages, p.num_microbatches = plan.virtual_stages, plan.num_microbatches
    p.global_batch_size, p.stage_layers = plan.global_batch_size, list(plan.stage_layers)
    p.layers = [strategy_to_c(s) for s in plan.layers]
    p.embedding = strategy_to_c(plan.embedding)
    return p


def plan_from_c(p: Any, precision: Precision | str) -> Plan:
    return Plan(world_size=p.world_size, layers=tuple(strategy_from_c(s) for s in p.layers), pp=p.pp,
                stage_layers=tuple(p.stage_layers), schedule=_SCHEDULE_BACK[p.schedule],
                virtual_stages=p.virtual_stages, num_microbatches=p.num_microbatches,
                global_batch_size=p.global_batch_size, embedding=strategy_from_c(p.embedding),
                precision=precision)


# ---------------------------------------------------------------------------- profiles


def hardware_tables(hw: HardwareProfile) -> Any:
    """The core's ``HardwareTables`` of a (validated) hardware profile, every group size the
    world can form included (:meth:`HardwareProfile.complete`)."""
    t = _C.HardwareTables()
    t.num_nodes, t.gpus_per_node = hw.num_nodes, hw.gpus_per_node
    entries = []
    for c in hw.complete().collectives:
        e = _C.CollectiveEntry()
        e.op, e.group_size = OP_BY_NAME[c.op.name], c.group_size
        e.placement = PLACEMENT_BY_NAME[c.placement.name]
        e.alpha_ms, e.bandwidth_gbps = c.alpha_ms, c.bandwidth_gbps
        entries.append(e)
    t.collectives = entries
    t.overlap_slowdown = hw.overlap_slowdown
    t.optimizer_ms_per_param = hw.optimizer_ms_per_param
    t.framework_overhead_bytes = hw.framework_overhead_bytes
    t.comm_buffer_bytes = hw.comm_buffer_bytes
    t.inter_node_rings = hw.inter_node_rings
    return t


def degrees(d: dict[int, Any], what: str) -> list[int]:
    """The shard degrees of a table, ascending; any positive integers."""
    bad = sorted(k for k in d if isinstance(k, bool) or not isinstance(k, int) or k < 1)
    if bad:
        raise ValueError(f"{what}: degrees {bad} are not positive integers")
    if not d:
        raise ValueError(f"{what}: no entries")
    return sorted(d)


def dense(d: dict[int, Any], degrees: list[int], what: str, missing: Any = None) -> list[Any]:
    """{1: a, 2: b, 3: c} -> [a, b, c] over ``degrees``; a degree the table lacks is an error,
    or ``missing`` when given (the core reads a negative entry as "not profiled")."""
    extra = sorted(set(d) - set(degrees))
    if extra:
        raise ValueError(f"{what}: degrees {extra} are not among the profiled degrees {degrees}")
    if missing is None and set(d) != set(degrees):
        raise ValueError(f"{what}: no entries for degrees {sorted(set(degrees) - set(d))}")
    return [d.get(k, missing) for k in degrees]


def layer_type_to_c(lt: LayerTypeProfile) -> Any:
    t = _C.LayerTypeProfile()
    t.name, t.param_count, t.carry_bytes_per_sample = lt.name, lt.param_count, lt.carry_bytes_per_sample
    t.num_heads, t.num_kv_heads, t.tp_collectives = lt.num_heads, lt.num_kv_heads, lt.tp_collectives
    t.ulysses_bytes_per_sample, t.seq_len = lt.ulysses_bytes_per_sample, lt.seq_len
    t.allow_sequence_parallel = bool(lt.allow_sequence_parallel)
    degs = degrees(lt.fwd_ms_per_sample, f"{lt.name}.fwd_ms_per_sample")
    t.degrees = degs
    t.fwd_ms_per_sample = dense(lt.fwd_ms_per_sample, degs, f"{lt.name}.fwd_ms_per_sample")
    t.bwd_ms_per_sample = dense(lt.bwd_ms_per_sample, degs, f"{lt.name}.bwd_ms_per_sample")
    t.fwd_ms_fixed, t.bwd_ms_fixed = lt.fwd_ms_fixed, lt.bwd_ms_fixed
    t.act_bytes_per_sample = [
        [int(v) for v in dense(lt.act_bytes_per_sample.get(k.value, {}), degs,
                               f"{lt.name}.act_bytes_per_sample.{k.value}",
                               None if k is SpKind.NONE else -1)]
        for k in SP_KIND_ROWS
    ]
    if lt.selective_act_bytes_per_sample or lt.selective_recompute_ms_per_sample:
        # over the same degrees as the other tables; a degree (or sp kind) a table lacks is
        # -1, which the core reads as "selective checkpointing not profiled there"
        t.selective_act_bytes_per_sample = [
            [int(v) for v in dense(lt.selective_act_bytes_per_sample.get(k.value, {}), degs,
                                   f"{lt.name}.selective_act_bytes_per_sample.{k.value}", -1)]
            for k in SP_KIND_ROWS
        ]
        t.selective_recompute_ms_per_sample = [float(v) for v in dense(
            lt.selective_recompute_ms_per_sample, degs,
            f"{lt.name}.selective_recompute_ms_per_sample", -1)]
    # mixed precision, ZeRO-2/3 units: their own activation tables (empty: the ones above)
    for key in ("fsdp_act_bytes_per_sample", "fsdp_selective_act_bytes_per_sample"):
        tables = getattr(lt, key)
        if tables:
            setattr(t, key, [[int(v) for v in dense(tables.get(k.value, {}), degs, f"{lt.name}.{key}.{k.value}", -1)]
                             if k.value in tables else [] for k in SP_KIND_ROWS])
    t.fsdp_carry_bytes_per_sample = lt.fsdp_carry_bytes_per_sample
    return t


def embedding_to_c(e: EmbeddingProfile) -> Any:
    c = _C.EmbeddingProfile()
    c.embed_param_count, c.head_param_count = e.embed_param_count, e.head_param_count
    c.tied_param_count, c.carry_bytes_per_sample = e.tied_param_count, e.carry_bytes_per_sample
    c.seq_len = e.seq_len
    degs = degrees(e.embed_fwd_ms_per_sample, "embedding.embed_fwd_ms_per_sample")
    c.degrees = degs
    for name in ("embed_fwd_ms_per_sample", "embed_bwd_ms_per_sample", "head_fwd_ms_per_sample",
                 "head_bwd_ms_per_sample", "embed_act_bytes_per_sample", "head_act_bytes_per_sample"):
        setattr(c, name, dense(getattr(e, name), degs, f"embedding.{name}"))
    if e.head_transient_bytes_per_sample:
        c.head_transient_bytes_per_sample = [int(v) for v in dense(
            e.head_transient_bytes_per_sample, degs, "embedding.head_transient_bytes_per_sample")]
    return c


def model_tables(mp: ModelProfile) -> Any:
    """The core's ``ModelTables`` of a model profile whose fields have been checked
    (:func:`galvatron.profiles.model.check_model_profile`)."""
    t = _C.ModelTables()
    t.layer_types = [layer_type_to_c(lt) for lt in mp.layer_types]
    t.layer_type_of = list(mp.layer_type_of)
    t.embedding = embedding_to_c(mp.embedding)
    t.compute_bytes = 4 if mp.precision == "fp32" else 2
    t.mixed_precision = mp.precision != "fp32"
    return t
