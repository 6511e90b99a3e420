"""How far a distributed fp32 run may drift from the single-process reference: bounds derived
from the arithmetic, not tuned on one machine.

Why the two runs differ at all, and why by different amounts on different machines: both
compute the same sums, but in a different order (a tp layer adds partial products of its
shards, ZeRO reduce-scatters partial gradients, a pipeline accumulates micro-batches; the CPU
matmul kernels block their sums by the vector width (AVX2 vs AVX-512) and the thread count).
Every reordering changes the rounding. The differences are then amplified by Adam: its update
``lr * m / (sqrt(v) + eps)`` normalises the gradient, so an element whose gradient is close to
zero (a key bias: softmax is shift invariant; an ``o_proj`` bias summed over padded tokens)
moves by ``lr * g / (|g| + eps)`` and a rounding change ``dg`` of that gradient moves it by up
to ``lr * dg / eps``. That is the 2e-5 "parameter error" a fixed tolerance tripped over on one
machine and not on another.

The bounds (u = 2^-24, the fp32 unit roundoff):

* Terms. A value of one step is the end of a chain of sums: the loss and every weight gradient
  sum over the tokens of the global batch, and between them every layer's matmuls sum over
  their inner dimension (``shape[-1]`` of each weight matrix), forward and backward.
  ``n = tokens + sum of inner dimensions`` counts the terms accumulated along that chain.
* Rounding of one run. Rounding errors of random sign grow like ``sqrt(n) * u`` relative to
  the sum of the magnitudes of the terms (Higham & Mary, "A new approach to probabilistic
  rounding error analysis", SIAM J. Sci. Comput. 2019); two runs in two orders differ by at
  most twice that: ``rel = 2 * sqrt(n) * u``.
* Loss and gradient norm, per step: ``rel`` for the loss; the global gradient norm also sums
  the squares of all ``P`` gradient elements: ``2 * sqrt(n + P) * u``. A loss at step ``t``
  also carries the parameter differences of the ``t - 1`` steps before it, each of the same
  order, so the bound over ``steps`` steps is ``steps * 2 * sqrt(n + P) * u``.
* Parameters, absolute. The terms of a gradient are bounded by the largest gradient element of
  the step, ``G_t`` (after clipping, from the reference), so ``dg <= rel * G_t``; Adam turns it
  into at most ``lr * min(2, dg / eps)`` (an update is at most ``lr`` in size either way), and
  the steps add up: ``sum_t lr_t * min(2, rel * G_t / eps)``. Weight decay scales an existing
  difference by ``1 - lr * wd <= 1`` and adds nothing.

A real bug (a missing gradient sync, a wrong shard) changes an update by a sizeable fraction of
``lr`` per step and the loss by far more than ``rel``: tests/distributed/ checks that such bugs
are still caught (``test_a_missing_gradient_sync_is_detected``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

U = 2.0**-24  # fp32 unit roundoff (torch.finfo(torch.float32).eps / 2)


def chain_terms(model: torch.nn.Module, tokens: int) -> int:
    """Terms accumulated along the longest chain of sums of one training step: the tokens of
    the global batch plus the inner dimension of every weight matrix (and embedding table)."""
    inner = sum(p.shape[-1] for p in model.parameters() if p.dim() >= 2)
    return int(tokens + inner)


@dataclass(frozen=True)
class Tolerance:
    """Bounds for comparing a run of ``steps`` steps with its reference (see the module doc)."""

    terms: int  # n: terms along the accumulation chain of one step
    num_params: int  # P: gradient elements summed into the global norm
    steps: int
    param_abs: float  # bound on |p_run - p_ref| of any element after ``steps`` steps

    @property
    def step_rel(self) -> float:
        """Relative difference of one value (loss, gradient) between two summation orders."""
        return 2.0 * math.sqrt(self.terms) * U

    @property
    def loss_rel(self) -> float:
        """Relative difference of a per-step loss or global gradient norm over the run."""
        return self.steps * 2.0 * math.sqrt(self.terms + self.num_params) * U


def tolerance(model: torch.nn.Module, tokens: int, lrs: list[float], grad_max: list[float],
              adam_eps: float) -> Tolerance:
    """The bounds for a run with per-step learning rates ``lrs`` whose reference had the largest
    gradient element ``grad_max[t]`` at step ``t`` (after clipping)."""
    n = chain_terms(model, tokens)
    rel = 2.0 * math.sqrt(n) * U
    param_abs = sum(lr * min(2.0, rel * g / adam_eps) for lr, g in zip(lrs, grad_max, strict=True))
    return Tolerance(terms=n, num_params=sum(p.numel() for p in model.parameters()), steps=len(lrs),
                     param_abs=param_abs)
