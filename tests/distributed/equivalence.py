"""Single-process reference training and the per-rank comparison against it."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

import galvatron.models as M
from tests.distributed.tolerance import Tolerance, tolerance

LR, BETAS, WD = 1e-3, (0.9, 0.999), 0.01
# eps 1e-5: gradients that are zero in exact arithmetic (key biases: softmax is shift
# invariant) are rounding noise, which Adam with eps 1e-8 would blow up to +-lr per step.
EPS = float(os.environ.get("GALVATRON_TEST_EPS", "1e-5"))


def make_batches(model_name: str, global_batch: int, seq: int, steps: int, seed: int = 1,
                 padding: bool = False, decoder_seq: int | None = None):
    """Random token batches; ``padding``: a random quarter of the tokens are masked out
    (mask 0, label -100; position 0 always kept so every query has a key), so masked keys
    change causal attention too and token counts differ between samples and ranks."""
    cfg = M.get_config(model_name)
    g = torch.Generator().manual_seed(seed)

    def tokens(length=seq):
        return torch.randint(0, cfg.vocab_size, (global_batch, length), generator=g)

    def pad_mask(length=seq):
        mask = (torch.rand(global_batch, length, generator=g) > 0.25).long()
        mask[:, 0] = 1
        return mask

    out = []
    for _ in range(steps):
        ids = tokens()
        b = {"input_ids": ids}
        dec = decoder_seq or seq
        if cfg.family == "t5":  # encoder-decoder: decoder inputs and their own targets
            b.update(decoder_input_ids=tokens(dec), labels=tokens(dec))
        if padding:
            b["attention_mask"] = mask = pad_mask()
            if cfg.family == "t5":  # the decoder has its own mask; labels follow it
                b["decoder_attention_mask"] = mask = pad_mask(dec)
            b["labels"] = b.get("labels", ids).masked_fill(mask == 0, -100)
        out.append(b)
    return out


class Reference(NamedTuple):
    """A single-process run: per-step losses, final parameters, per-step gradient norms (with
    clipping) and the bounds a distributed run of the same steps is held to."""

    losses: list[float]
    params: dict[str, torch.Tensor]
    norms: list[float]
    tol: Tolerance


def _tokens(model, b) -> int:
    """Tokens of one global batch entering the model (encoder + decoder, or image patches)."""
    if "input_ids" in b:
        return b["input_ids"].numel() + (b["decoder_input_ids"].numel() if "decoder_input_ids" in b else 0)
    return b["pixel_values"].shape[0] * M.spec(model.config).seq_len


def reference(model_name: str, batches, seed: int = 0, max_grad_norm: float | None = None,
              overrides: dict | None = None) -> Reference:
    """Losses per step and final parameters of plain single-process training."""
    model = M.build(model_name, seed=seed, **(overrides or {}))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            foreach=False)
    losses, norms, grad_max = [], [], []
    for b in batches:
        opt.zero_grad()
        inputs = {k: v for k, v in b.items() if k != "labels"}
        loss = model.loss(model(**inputs), {"labels": b["labels"] if "labels" in b else b["input_ids"]})
        loss.backward()
        if max_grad_norm is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)))
        grad_max.append(max(float(p.grad.abs().max()) for p in model.parameters() if p.grad is not None))
        opt.step()
        losses.append(float(loss.detach()))
    tol = tolerance(model, max(_tokens(model, b) for b in batches), [LR] * len(batches), grad_max, EPS)
    return Reference(losses, {n: p.detach().clone() for n, p in model.named_parameters()}, norms, tol)


def reference_low_precision_params(model_name: str, batches, seed: int = 0,
                                   max_grad_norm: float | None = None, overrides: dict | None = None,
                                   dtype=torch.bfloat16, cast_params: bool = True) -> Reference:
    """Single-process mixed-precision training as FSDP2's ``MixedPrecisionPolicy(param_dtype=
    dtype, reduce_dtype=float32)`` does it: fp32 master weights and AdamW; every step a
    ``dtype`` copy of the weights runs forward and backward under autocast, and its gradients,
    cast to fp32, are the master gradients. ``cast_params=False``: autocast on the fp32
    weights themselves (what DDP / ZeRO-1 units do). Its ``tol`` is the fp32 bound of
    :func:`reference` for these steps; a low-precision run is held to its own bound."""
    import copy

    master = M.build(model_name, seed=seed, **(overrides or {}))
    opt = torch.optim.AdamW(master.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                            foreach=False)
    losses, norms, grad_max = [], [], []
    for b in batches:
        opt.zero_grad()
        work = copy.deepcopy(master).to(dtype) if cast_params else copy.deepcopy(master)
        inputs = {k: v for k, v in b.items() if k != "labels"}
        with torch.autocast("cpu", dtype=dtype):
            loss = work.loss(work(**inputs), {"labels": b.get("labels", b["input_ids"])})
        loss.backward()
        for p, q in zip(master.parameters(), work.parameters(), strict=True):
            p.grad = None if q.grad is None else q.grad.float()
        if max_grad_norm is not None:
            norms.append(float(torch.nn.utils.clip_grad_norm_(master.parameters(), max_grad_norm)))
        grad_max.append(max(float(p.grad.abs().max()) for p in master.parameters() if p.grad is not None))
        opt.step()
        losses.append(float(loss.detach().float()))
    tol = tolerance(master, max(_tokens(master, b) for b in batches), [LR] * len(batches), grad_max, EPS)
    return Reference(losses, {n: p.detach().clone() for n, p in master.named_parameters()}, norms, tol)


def build_case(model_name: str, plan, batches, seed: int = 0,
               max_grad_norm: float | None = None, overrides: dict | None = None,
               seq_len: int | None = None):
    """This rank's part of the model under ``plan`` with the reference's optimizer settings;
    sequence (and T5 decoder) lengths read from ``batches``."""
    from galvatron import parallel

    model = M.build(model_name, seed=seed, **(overrides or {}))
    seq_len = seq_len or batches[0]["input_ids"].shape[1]
    dec = batches[0].get("decoder_input_ids")
    return parallel.build(model, plan, seed=seed, seq_len=seq_len,
                          decoder_seq_len=None if dec is None else dec.shape[1],
                          lr=LR, betas=BETAS, eps=EPS, weight_decay=WD,
                          max_grad_norm=max_grad_norm)


def train(pm, batches) -> tuple[list[float], list[float | None]]:
    """Per-step losses and gradient norms of training ``pm`` on ``batches``."""
    losses, norms = [], []
    for b in batches:
        losses.append(pm.train_step(b))
        norms.append(pm.last_grad_norm)
    return losses, norms


def run_case(model_name: str, plan, batches, ref, seed: int = 0,
             max_grad_norm: float | None = None, overrides: dict | None = None,
             corrupt=None, seq_len: int | None = None) -> dict:
    """Train ``plan`` on this rank and compare with ``ref``; returns max errors."""
    pm = build_case(model_name, plan, batches, seed, max_grad_norm, overrides, seq_len)
    held = {id(p) for c in pm.chunks for p in c.parameters()}  # what checkpoints save
    assert all(id(p) in held for u in pm.units for p in u.params()), "a unit outside the chunks"
    if corrupt is not None:
        corrupt(pm)
    losses, norms = train(pm, batches)
    return compare(pm, losses, norms, ref, max_grad_norm is not None)


def compare(pm, losses, norms, ref: Reference, check_norms: bool = True, first_step: int = 0) -> dict:
    """Errors of ``pm``'s per-step losses (and gradient norms) from step ``first_step`` on and
    of its current local parameters against the reference run ``ref``, with the bounds they are
    held to (``loss_tol``: relative; ``param_tol``: absolute, see tests/distributed/tolerance.py)."""
    ref_losses = ref.losses[first_step:first_step + len(losses)]
    loss_err = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses, strict=True))
    if check_norms:  # the global gradient norm before clipping, every step
        ref_norms = ref.norms[first_step:first_step + len(norms)]
        loss_err = max([loss_err] + [abs(a - b) / b for a, b in zip(norms, ref_norms, strict=True)])
    param_err, worst = 0.0, ""
    names = set()
    for name, t, src in pm.local_parameters():
        r = ref.params[name]
        if src is not None:
            dim, start, length = src
            r = r.narrow(dim, start, min(length, r.shape[dim] - start))
            t = t.narrow(dim, 0, r.shape[dim])
        err = float((t - r).abs().max())  # absolute: Adam moves every element by at most ~lr
        if err > param_err:
            param_err, worst = err, name
        names.add(name)
    return {"losses": losses, "ref_losses": ref_losses, "loss_err": loss_err,
            "param_err": param_err, "worst": worst, "names": sorted(names),
            "loss_tol": ref.tol.loss_rel, "param_tol": ref.tol.param_abs}


def within(r: dict) -> bool:
    """True when a :func:`compare` result is within its bounds."""
    return r["loss_err"] <= r["loss_tol"] and r["param_err"] <= r["param_tol"]


def describe(r: dict) -> str:
    return (f"loss/grad-norm err={r['loss_err']:.2e} (bound {r['loss_tol']:.1e}) "
            f"param_err={r['param_err']:.2e} (bound {r['param_tol']:.1e}) ({r['worst']})")
