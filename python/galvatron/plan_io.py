"""Plan files in either format: ours (versioned JSON, :meth:`Plan.save` / :meth:`Plan.load`)
and Galvatron-2's ``galvatron_config_*.json`` (:mod:`galvatron.galvatron_format`).

This is the plan layer's entry for files: every command and the training job load plans
through :func:`load_plan`, and whether a file is a Galvatron-2 plan is decided by
:func:`galvatron.plan.is_galvatron2_plan` alone. ``plan.py`` (the dataclasses)
and ``galvatron_format.py`` (the field mapping) import nothing from here.
"""

from __future__ import annotations

import json
import os
from typing import Any

from galvatron._io import atomic_write_text, read_json
from galvatron.galvatron_format import plan_from_galvatron_file, plan_to_galvatron_dict
from galvatron.plan import Plan, is_galvatron2_plan

FORMATS = ("galvatron", "galvatron2")


def load_plan(path: str | os.PathLike[str], world_size: int | None = None,
              megatron_sp: bool | None = None) -> Plan:
    """A plan file of either format (detected from its keys), validated.

    ``world_size`` checks our format against it and gives Galvatron-2 files (which do not
    always record it) their device count. ``megatron_sp`` (Galvatron-2 files only): whether
    their tp > 1 layers run with Megatron-SP; ``None`` = the file's ``sequence_parallel`` key,
    else on, as Galvatron-2's runtime does by default.
    """
    if is_galvatron2_plan(read_json(path)):
        return read_galvatron2_plan(path, world_size=world_size, megatron_sp=megatron_sp)
    plan = Plan.load(path)
    if world_size is not None:
        plan.validate(world_size=world_size)
    return plan


def file_format(path: str | os.PathLike[str]) -> str:
    """``'galvatron2'`` or ``'galvatron'``: the format of a plan file."""
    return "galvatron2" if is_galvatron2_plan(read_json(path)) else "galvatron"


def read_galvatron2_plan(path: str | os.PathLike[str], world_size: int | None = None,
                         megatron_sp: bool | None = None) -> Plan:
    """A Galvatron-2 plan file (see :mod:`galvatron.galvatron_format` for the mapping)."""
    return plan_from_galvatron_file(path, world_size=world_size, megatron_sp=megatron_sp)


def write_galvatron2_plan(plan: Plan, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The plan in Galvatron-2's format (written to ``path`` if given); ``ValueError`` naming
    the field for anything that format cannot express."""
    d = plan_to_galvatron_dict(plan)
    if path is not None:
        atomic_write_text(path, json.dumps(d, indent=4) + "\n")
    return d


def save_plan(plan: Plan, path: str | os.PathLike[str], fmt: str = "galvatron") -> None:
    """Write ``plan`` in ``fmt``: ``galvatron`` (ours) or ``galvatron2``."""
    if fmt == "galvatron":
        plan.save(path)
    elif fmt == "galvatron2":
        write_galvatron2_plan(plan, path)
    else:
        raise ValueError(f"format: {fmt!r} is not accepted; accepted: {', '.join(FORMATS)}")


__all__ = ["FORMATS", "file_format", "is_galvatron2_plan", "load_plan", "read_galvatron2_plan",
           "save_plan", "write_galvatron2_plan"]
