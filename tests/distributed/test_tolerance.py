"""The equivalence bounds (tolerance.py) hold for a legitimate change of summation order and
reject a real bug, in one process: the reference against the same training with each batch
split into two accumulated micro-batches (another order of the token sums), and against one
that loses a micro-batch's gradient (what a missing data-parallel sync does)."""

from __future__ import annotations

import torch

import galvatron.models as M
from tests.distributed.equivalence import BETAS, EPS, LR, WD, make_batches, reference
from tests.distributed.tolerance import U, chain_terms

MODEL, OV, GBS, SEQ, STEPS, CLIP = "gpt2-debug", {"num_layers": 4}, 8, 16, 3, 1.0


def _accumulated(batches, drop_second_half: bool = False):
    model = M.build(MODEL, seed=0, **OV)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, foreach=False)
    losses = []
    for b in batches:
        opt.zero_grad()
        valid = (b["labels"][:, 1:] != -100).sum()  # causal LM: labels shift by one inside
        total = 0.0
        for half in (slice(0, GBS // 2), slice(GBS // 2, GBS)):
            part = {k: v[half] for k, v in b.items()}
            inputs = {k: v for k, v in part.items() if k != "labels"}
            # mean over the global batch's valid tokens = sum of the halves' token sums / count
            loss = model.loss(model(**inputs), {"labels": part["labels"]}) * (part["labels"][:, 1:] != -100).sum() / valid
            if not (drop_second_half and half.start):
                loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        losses.append(total)
    return losses, {n: p.detach() for n, p in model.named_parameters()}


def _errors(ref, losses, params):
    loss_err = max(abs(a - b) / abs(b) for a, b in zip(losses, ref.losses, strict=True))
    param_err = max(float((params[n] - ref.params[n]).abs().max()) for n in params)
    return loss_err, param_err


def test_chain_terms_count_tokens_and_inner_dimensions():
    model = M.build(MODEL, seed=0, **OV)
    h, f = model.config.hidden_size, model.config.ffn_hidden
    # wte, wpe: h each; per layer q, k, v, o, fc_in: h, fc_out: f
    assert chain_terms(model, GBS * SEQ) == GBS * SEQ + 2 * h + 4 * (5 * h + f)


def test_another_summation_order_stays_within_the_bounds_and_a_lost_gradient_does_not():
    batches = make_batches(MODEL, GBS, SEQ, STEPS, padding=True)
    ref = reference(MODEL, batches, max_grad_norm=CLIP, overrides=OV)
    tol = ref.tol
    assert tol.step_rel == 2 * tol.terms**0.5 * U and 0 < tol.param_abs <= 2 * LR * STEPS
    loss_err, param_err = _errors(ref, *_accumulated(batches))
    assert 0 < param_err <= tol.param_abs and loss_err <= tol.loss_rel, (loss_err, param_err, tol)
    loss_err, param_err = _errors(ref, *_accumulated(batches, drop_second_half=True))
    assert param_err > 5 * tol.param_abs, (param_err, tol)
