"""Property-based fuzzing of every loader of a file a user or another tool may write: plans (ours
and Galvatron-2's), hardware and model profiles, training configs (YAML and TOML). For any JSON /
YAML / TOML value -- a valid document with one field replaced, deleted or added, or any value
at all -- loading gives either a valid object or a one-line ``ValueError`` that names the file;
never another exception. Sizes are bounded (documents of a few dozen leaves), so the whole file
runs in about 10-20 s."""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import galvatron
from galvatron import ModelProfile, Plan
from galvatron.plan_io import load_plan as load_any_plan
from galvatron.profiles import HardwareProfile
from galvatron.training.config import build_config
from tests.unit.test_galvatron_format import G2_PLAN

# GALVATRON_FUZZ_EXAMPLES=2000 for a longer campaign; the suite's default keeps the file ~20 s.
SETTINGS = settings(max_examples=int(os.environ.get("GALVATRON_FUZZ_EXAMPLES", "50")), deadline=None,
                    derandomize="GALVATRON_FUZZ_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.sampled_from([0, 1, -1, 2, 7, 8, 2**31, 2**31 - 1, 2**63, 1e308, 7.9, 0.5])
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["", "8", "1,2", "ddp", "zero3", "1f1b", "none", "ulysses", "megatron", "bf16"]))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                      max_leaves=12)

_HW = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=4)
_MP = galvatron.model_profile("gpt2-debug", hardware=_HW)
DOCS = {
    "plan": Plan.uniform(4, 4, pp=2, tp=2, num_microbatches=2, global_batch_size=4).to_dict(),
    "g2plan": dict(G2_PLAN),
    "hardware": json.loads(json.dumps(_HW.to_dict())),
    "model": json.loads(json.dumps(_MP.to_dict())),
    "config": {"steps": 3, "global_batch_size": 8, "model": {"name": "gpt2-debug", "seq_len": 32},
               "data": {"kind": "builtin", "path": ""}, "optim": {"lr": 0.001}, "parallel": {"pp": 1}},
}


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:6]):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated(draw: Any, name: str) -> Any:
    doc = json.loads(json.dumps(DOCS[name]))
    if draw(st.integers(0, 9)) == 0:
        return draw(values)  # anything at all
    path = draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
    if action == "delete":
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = draw(values)
    else:
        parent[path[-1]] = draw(values)
    return doc


def _write(text: str, name: str) -> str:
    d = tempfile.mkdtemp(prefix="galvatron-fuzz-")
    path = os.path.join(d, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _holds(load: Any, path: str) -> Any:
    """The property: a valid object, or a one-line ValueError naming the file."""
    try:
        return load(path)
    except ValueError as e:
        msg = str(e)
        assert path in msg, msg
        assert "\n" not in msg.split(":\n")[0], msg
        return None


@SETTINGS
@given(mutated("plan"))
def test_plan_loader(doc):
    path = _write(json.dumps(doc), "plan.json")
    plan = _holds(Plan.load, path)
    if plan is not None:
        plan.summary()
        assert Plan.from_dict(json.loads(plan.to_json())) == plan


@SETTINGS
@given(mutated("g2plan"))
def test_galvatron2_plan_loader(doc):
    path = _write(json.dumps(doc), "galvatron_config_x_1nodes_8gpus_per_node_36GB_bf16.json")
    plan = _holds(load_any_plan, path)
    if plan is not None:
        plan.summary()


@SETTINGS
@given(mutated("hardware"))
def test_hardware_profile_loader(doc):
    path = _write(json.dumps(doc), "hw.json")
    hw = _holds(HardwareProfile.load, path)
    if hw is not None:
        hw.summary()


@SETTINGS
@given(mutated("model"))
def test_model_profile_loader(doc):
    path = _write(json.dumps(doc), "mp.json")
    mp = _holds(ModelProfile.load, path)
    if mp is not None and mp.num_layers == _MP.num_layers:  # a loaded profile is usable by the core
        try:
            galvatron.estimate(Plan.uniform(4, mp.num_layers, global_batch_size=4), mp, _HW)
        except ValueError:
            pass


def _toml(doc: Any) -> str:
    """A small TOML writer for the fuzzed configs (values TOML cannot hold are left out)."""
    def scalar(v: Any) -> str | None:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v) if abs(v) < 2**63 else None
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            items = [scalar(x) for x in v]
            return None if None in items else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
        return None

    if not isinstance(doc, dict):
        return f"x = {scalar(doc) or 1}\n"
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif (s := scalar(v)) is not None:
            lines.append(f"{json.dumps(k)} = {s}")
    for k, t in tables:
        lines.append(f"[{json.dumps(k)}]")
        lines.extend(f"{json.dumps(kk)} = {s}" for kk, vv in t.items() if (s := scalar(vv)) is not None)
    return "\n".join(lines) + "\n"


@SETTINGS
@given(mutated("config"), st.booleans())
def test_config_loader(doc, as_toml):
    text = _toml(doc) if as_toml else yaml.safe_dump(doc)
    path = _write(text, "c.toml" if as_toml else "c.yaml")
    cfg = _holds(build_config, path)
    if cfg is not None:
        cfg.validate()


@SETTINGS
@given(st.binary(max_size=200), st.sampled_from(["plan.json", "c.yaml", "c.toml"]))
def test_any_bytes(raw, name):
    d = tempfile.mkdtemp(prefix="galvatron-fuzz-")
    path = os.path.join(d, name)
    with open(path, "wb") as f:
        f.write(raw)
    _holds(Plan.load if name.endswith(".json") else build_config, path)
