"""What a resumed run says about the checkpoint it continues: refused when the checkpoint is
already past ``steps``; otherwise one line on the plan (the same, changed without moving any
parameter, or resharded) plus notes on a changed batch size or precision."""

from __future__ import annotations

from typing import Any

from galvatron.plan import Plan

# The fields that decide which rank holds which piece of which tensor.
_LAYOUT_FIELDS = ("world_size", "pp", "virtual_stages", "stage_layers")
_STRATEGY_LAYOUT_FIELDS = ("tp", "sp", "sp_kind", "dp_type", "tp_consecutive")


def check_steps(start: int, steps: int, path: str) -> None:
    if start > steps:
        raise ValueError(f"--resume: the checkpoint {path} is at step {start}, beyond --steps {steps}; "
                         f"pass --steps larger than {start} to train on from it")


def _layout(plan: dict[str, Any]) -> tuple:
    def strat(s: dict[str, Any]) -> tuple:
        return tuple(s.get(k) for k in _STRATEGY_LAYOUT_FIELDS)

    return (tuple(plan.get(k) if k != "stage_layers" else tuple(plan.get(k) or ()) for k in _LAYOUT_FIELDS),
            strat(plan.get("embedding") or {}), tuple(strat(s) for s in plan.get("layers") or ()))


def describe(saved: dict[str, Any] | None, plan: Plan, summary: str = "?") -> list[str]:
    """``saved``: the plan dict recorded in the checkpoint. The first item says how the plan
    relates to it; further items are notes."""
    now = dict(plan.to_dict(), predicted=None)
    saved = dict(saved or {}, predicted=None)
    now.pop("model", None)
    saved.pop("model", None)
    if not saved.get("layers"):
        how = "plan not recorded in the checkpoint"
    elif saved == now:
        how = "same plan"
    elif _layout(saved) == _layout(now):
        how = "another plan with the same parameter layout: nothing resharded"
    else:
        how = f"resharded from world size {saved.get('world_size', '?')}, {summary}"
    notes = [how]
    if saved.get("global_batch_size") not in (None, plan.global_batch_size):
        notes.append(f"note: the checkpoint was trained with global batch size {saved['global_batch_size']}, "
                     f"this run uses {plan.global_batch_size}")
    if saved.get("precision") not in (None, plan.precision.value):
        notes.append(f"note: the checkpoint was trained in {saved['precision']}, this run computes in "
                     f"{plan.precision.value} (the fp32 master weights carry over)")
    return notes
