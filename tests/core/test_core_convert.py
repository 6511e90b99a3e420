"""The one converter to the compiled core (galvatron._core_convert): enums in step with the
core's, plans round-trip exactly, and no other module builds the core's structs."""

from __future__ import annotations

import pathlib
import re

import pytest

import galvatron
from galvatron import _C
from galvatron import _core_convert as conv
from galvatron.plan import Checkpoint, DpType, LayerStrategy, Plan, Schedule, SpKind
from galvatron.profiles.hardware import Op, Placement


@pytest.mark.parametrize("py_enum,c_enum", [(DpType, _C.DpType), (SpKind, _C.SpKind),
                                            (Schedule, _C.Schedule), (Checkpoint, _C.Checkpoint),
                                            (Op, _C.Op), (Placement, _C.Placement)])
def test_every_python_enum_has_the_same_members_as_the_core(py_enum, c_enum):
    assert [m.name for m in py_enum] == sorted(c_enum.__members__, key=lambda n: int(c_enum.__members__[n]))


def test_per_sp_kind_rows_follow_the_core_order():
    """Rows of act_bytes_per_sample are indexed by the core's SpKind value."""
    assert [int(conv.SP_KIND[k]) for k in conv.SP_KIND_ROWS] == list(range(len(SpKind)))
    from galvatron.profiles.model import SP_KINDS

    assert SP_KINDS == tuple(k.value for k in conv.SP_KIND_ROWS)


def test_plan_round_trips_through_the_core_struct():
    layers = (LayerStrategy(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint="selective"),
              LayerStrategy(sp=4, sp_kind="ulysses", dp_type="zero1", tp_consecutive=False),
              LayerStrategy(tp=4, checkpoint="full", dp_type="zero2"),
              LayerStrategy(dp_type="ddp"))
    plan = Plan(world_size=8, layers=layers, pp=2, stage_layers=(1, 3), schedule="gpipe",
                num_microbatches=4, global_batch_size=16, embedding=LayerStrategy(tp=2),
                precision="fp32")
    back = conv.plan_from_c(conv.plan_to_c(plan), plan.precision)
    assert back == plan


_STRUCTS = ("Strategy", "PlanSpec", "HardwareTables", "CollectiveEntry", "LayerTypeProfile",
            "EmbeddingProfile", "ModelTables")
_ENUMS = ("DpType", "SpKind", "Schedule", "Checkpoint", "Op", "Placement")


def test_no_other_module_converts_to_the_core():
    """Enum maps and struct building live in _core_convert.py alone (search/space.py fills
    the SearchOptions struct with the enums it gets from there)."""
    root = pathlib.Path(galvatron.__file__).parent
    pattern = re.compile(r"_C\.(" + "|".join(_STRUCTS + _ENUMS) + r")\b")
    offenders = {str(p.relative_to(root)): pattern.findall(p.read_text())
                 for p in root.rglob("*.py") if p.name != "_core_convert.py"}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_search_api_exports_no_private_converters():
    import sys

    import galvatron.search.api  # noqa: F401 - the package module, not the function

    names = sys.modules["galvatron.search"].__all__
    assert not {"plan_to_c", "plan_from_c"} & set(names)
