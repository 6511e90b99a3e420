"""Training faults the job stops on instead of training on: non-finite losses and gradient norms.

``NonFiniteGuard`` counts consecutive steps whose loss or gradient norm is NaN or infinite and
stops the job (a ``ValueError`` naming the step) once more than ``patience`` such steps follow
each other (default 0: the first one stops). ``finite_state`` says whether every tensor about to
be checkpointed is finite: a non-finite state is never saved, so the newest checkpoints stay the
last good ones.
"""

from __future__ import annotations

import math

import torch


class NonFiniteError(ValueError):
    """The loss or gradient norm stayed non-finite for more steps than allowed."""


def non_finite(loss: float | None, grad_norm: float | None) -> list[str]:
    """The names of the non-finite values among the step's loss and gradient norm."""
    return [name for name, v in (("loss", loss), ("grad_norm", grad_norm))
            if v is not None and not math.isfinite(v)]


class NonFiniteGuard:
    def __init__(self, patience: int = 0):
        if patience < 0:
            raise ValueError(f"optim.nonfinite_patience must be >= 0, got {patience}")
        self.patience = patience
        self.consecutive = 0
        self.first_bad_step: int | None = None

    def update(self, step: int, bad: bool, detail: str = "") -> None:
        """Record step ``step`` (``bad``: any rank saw a non-finite value); raises
        :class:`NonFiniteError` when the patience is exhausted."""
        if not bad:
            self.consecutive, self.first_bad_step = 0, None
            return
        self.consecutive += 1
        if self.first_bad_step is None:
            self.first_bad_step = step
        if self.consecutive > self.patience:
            since = "" if self.first_bad_step == step else f" (non-finite since step {self.first_bad_step})"
            raise NonFiniteError(
                f"step {step}: non-finite {detail or 'loss or gradient norm'}{since}; stopping "
                f"(optim.nonfinite_patience = {self.patience}). No checkpoint of a non-finite state was "
                "written; resume from the last good one with a lower optim.lr or more optim.warmup_steps")

    @property
    def healthy(self) -> bool:
        """True when the last step was finite (a checkpoint may be written)."""
        return self.consecutive == 0


def finite_state(tensors: dict[str, torch.Tensor]) -> bool:
    """True when every floating-point tensor in ``tensors`` (this rank's checkpoint state) is finite."""
    for t in tensors.values():
        local = t.to_local() if hasattr(t, "to_local") else t
        if local.is_floating_point() and local.numel() and not bool(torch.isfinite(local).all()):
            return False
    return True


def json_safe(record: dict) -> dict:
    """``record`` with non-finite floats replaced by null and their names listed under
    ``nonfinite`` (JSON has no NaN; a bare NaN makes the line unreadable to strict parsers)."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return record
    out = {k: (None if k in bad else v) for k, v in record.items()}
    out["nonfinite"] = {k: repr(record[k]) for k in bad}
    return out
