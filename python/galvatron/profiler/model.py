"""Model profiler: per layer type compute time and memory, measured in one process.

For each layer type of a model (the first layer of that type, with the real input it gets in
the model) and each shard degree ``d`` (1, 2, 4, ... up to ``max_degree``):

- **time**: forward and backward of the layer's tensor-parallel local shard (q/k/v and
  fc_in/gate/up column-split, o_proj and fc_out/down row-split: ``d`` times fewer heads and
  MLP columns; norms replicated), at several micro-batch sizes (timed round-robin; median of
  the repeats on GPU, mean on CPU), with and without activation checkpointing (backward
  then includes the recompute). Collectives are not run: their cost comes from the hardware
  profile. The same table serves Ulysses of the same degree (same FLOPs per rank). Fitted as
  ``fixed + per_sample * batch`` (:func:`fit_fixed_per_sample`).
- **memory**: parameters (counted on the module), and activation bytes per sample for each
  sequence-parallel kind, measured exactly as the unique storages autograd saves
  (:func:`galvatron.models.spec.measure_saved_bytes`): plain tp on the shard; Megatron-SP and
  Ulysses on a simulated rank (collectives replaced by shape-equivalent local ops, as in
  ``tests/unit/test_models_spec.py``) for pre-norm blocks; checkpointed layers.

Where a degree cannot be measured (more shards than heads or kv heads, a projection that
does not split evenly), times are the largest measured degree's scaled by ``d_measured / d``
and activation bytes come from the analytic spec; so do the Megatron-SP / Ulysses bytes of
layer types that are not pre-norm blocks (BERT, T5, Swin).
``measurements["layers"][name]["sources"]`` lists every value that was filled in.

Embedding: timed at degree 1; the lookup is not split by a vocabulary-parallel shard, so the
same per-sample time is used for every degree. Head + loss: timed and measured on a
vocabulary-column shard of the output projection (``ceil(vocab / d)`` columns; labels folded
into the local vocabulary); classifier heads are not split.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from galvatron.models.spec import measure_saved_bytes
from galvatron.profiler.fit import fit_fixed_per_sample, summarize_ms
from galvatron.profiler.shard import (
    head_shard,
    is_prenorm,
    megatron_sp_forward,
    params_of,
    seq_slice,
    tp_shard,
    ulysses_layer,
)
from galvatron.profiles.model import ModelProfile

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class ModelProfilerOptions:
    batch_sizes: tuple[int, ...] = (1, 2, 4)
    max_degree: int = 8
    warmup: int = 2
    repeats: int = 5
    device: str | None = None  # default: cuda when available
    checkpoint: bool = True
    verbose: bool = True
    seed: int = 0
    extra_seq_lens: tuple[int, ...] = ()  # also time each layer type at these sequence lengths
    # CPU: local processes that will train at once on this machine's cores. Each profiles one
    # thread; with more processes than cores each gets ``cores / processes`` of a core, so the
    # times are scaled by ``core_share(processes)`` (recorded in measurements["core_share"]).
    processes: int = 1

    def validate(self) -> None:
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"batch_sizes: need positive micro-batch sizes, got {self.batch_sizes}")
        if self.max_degree < 1 or self.max_degree & (self.max_degree - 1):
            raise ValueError(f"max_degree: must be a power of two >= 1, got {self.max_degree}")
        if any(x < 1 for x in self.extra_seq_lens):
            raise ValueError(f"extra_seq_lens: need positive lengths, got {self.extra_seq_lens}")
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) or self.processes < 1:
            raise ValueError(f"processes: must be an integer >= 1, got {self.processes!r}")
        if self.warmup < 0 or self.repeats < 1:
            raise ValueError(f"warmup >= 0 and repeats >= 1 required, got {self.warmup}, {self.repeats}")


# ------------------------------------------------------------------------------- timing


class _Clock:
    def __init__(self, device: torch.device, warmup: int, repeats: int) -> None:
        self.cuda = device.type == "cuda"
        self.warmup, self.repeats = warmup, repeats

    def _now(self) -> Any:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _ms(self, a: Any, b: Any) -> float:
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b)
        return (b - a) * 1e3

    def fwd_bwd(self, cases: dict[int, Callable[[], Any]], bwd: Callable[[Any], None]) -> dict[int, tuple[float, float]]:
        """Forward and backward ms of ``bwd(fwd())`` for each case (batch size): median on GPU,
        mean on CPU (:func:`summarize_ms`). The
        cases are timed round-robin, so a slow spell of the machine hits every batch size
        alike instead of bending the fit."""
        for fwd in cases.values():
            for _ in range(self.warmup):
                bwd(fwd())
        f: dict[int, list[float]] = {k: [] for k in cases}
        b: dict[int, list[float]] = {k: [] for k in cases}
        for _ in range(self.repeats):
            for k, fwd in cases.items():
                if self.cuda:
                    torch.cuda.synchronize()
                t0 = self._now()
                out = fwd()
                t1 = self._now()
                bwd(out)
                t2 = self._now()
                f[k].append(self._ms(t0, t1))
                b[k].append(self._ms(t1, t2))
        return {k: (summarize_ms(f[k], self.cuda), summarize_ms(b[k], self.cuda)) for k in cases}


def _outputs(out: Any) -> list[torch.Tensor]:
    """Float tensors of a layer's output that need a gradient (a Carry or a tensor)."""
    ts = [out] if isinstance(out, torch.Tensor) else [getattr(out, f.name) for f in dataclasses.fields(out)]
    return [t for t in ts if isinstance(t, torch.Tensor) and t.requires_grad]


def _backward(out: Any) -> None:
    ts = _outputs(out)
    torch.autograd.backward(ts, [torch.ones_like(t) for t in ts])


def _leaf(carry: Any, batch: int | None = None) -> Any:
    """A copy of the carry (first ``batch`` samples) whose float streams are fresh leaves."""
    def f(t: Any) -> Any:
        if t is None:
            return None
        t = t[:batch].clone() if batch is not None else t  # its own storage: measured bytes are exact
        return t.detach().requires_grad_() if t.is_floating_point() else t

    return dataclasses.replace(carry, **{k.name: f(getattr(carry, k.name)) for k in dataclasses.fields(carry)})


# ------------------------------------------------------------------------------- model parts


def _sample_batch(model: nn.Module, cfg: Any, b: int, seq: int, device: torch.device,
                  dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random inputs and labels for a model (ids for text, pixels for images)."""
    g = torch.Generator().manual_seed(1234 + b)
    names = model.input_names
    batch: dict[str, torch.Tensor] = {}
    if "pixel_values" in names:
        shape = (b, cfg.num_channels, cfg.image_size, cfg.image_size)
        batch["pixel_values"] = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
        batch["labels"] = torch.randint(0, cfg.num_labels, (b,), generator=g).to(device)
        return batch
    batch["input_ids"] = torch.randint(0, cfg.vocab_size, (b, seq), generator=g).to(device)
    if "decoder_input_ids" in names:
        batch["decoder_input_ids"] = torch.randint(0, cfg.vocab_size, (b, seq), generator=g).to(device)
    batch["labels"] = batch.get("decoder_input_ids", batch["input_ids"])
    return batch


def _materialise(model: nn.Module, part: nn.Module, device: torch.device, dtype: torch.dtype, seed: int) -> None:
    part.to_empty(device=device)
    model.retie()
    model.init_weights(seed)
    part.to(dtype)


class _Parts:
    """The embedding, the head and the first layer of each type, with their real inputs
    (carries at the largest batch), materialised from a meta-device model: layers before the
    last first-of-a-type are built one at a time only to produce the next input, then dropped.
    The head's input is the output of the first layer of the last layer's type: the same shape
    as the real one (values do not change time or saved bytes), without running every layer."""

    def __init__(self, cfg: Any, seq: int, device: torch.device, dtype: torch.dtype, bmax: int, seed: int) -> None:
        from galvatron import models

        self.model = m = models.build(cfg, device="meta", seed=seed)
        for part in (m.embed, m.head):
            _materialise(m, part, device, dtype, seed)
        m.train()
        self.batch = _sample_batch(m, cfg, bmax, seq, device, dtype)
        types = m.layer_types()
        first = {t: types.index(t) for t in dict.fromkeys(types)}
        self.layers: dict[str, nn.Module] = {}
        self.carries: dict[str, Any] = {}
        with torch.no_grad():
            carry = m.embed({k: v for k, v in self.batch.items() if k != "labels"})
            for i in range(max(first.values()) + 1):
                layer = m.layers[i]
                _materialise(m, layer, device, dtype, seed)
                if first[types[i]] == i:
                    self.layers[types[i]], self.carries[types[i]] = layer, carry
                carry = layer(carry)
                if i == first[types[-1]]:
                    self.head_carry = carry
                if first[types[i]] != i:
                    self._drop(layer)

    def _drop(self, layer: nn.Module) -> None:
        """Free a layer that was only needed to produce the next input, unless it shares a
        parameter with a kept part (``Module.to`` would move the shared tensor too)."""
        kept = {id(p) for mod in (self.model.embed, self.model.head, *self.layers.values()) for p in mod.parameters()}
        if not any(id(p) in kept for p in layer.parameters()):
            layer.to("meta")


# ------------------------------------------------------------------------------- the profiler


class _Profiler:
    def __init__(self, name: str, cfg: Any, spec: Any, seq: int, precision: str, opts: ModelProfilerOptions,
                 device: torch.device) -> None:
        self.name, self.cfg, self.spec, self.seq, self.opts, self.device = name, cfg, spec, seq, opts, device
        self.precision, self.dtype = precision, _DTYPES[precision]
        self.cb = 4 if precision == "fp32" else 2
        self.ln_bytes = 4 if device.type == "cuda" else self.cb
        self.clock = _Clock(device, opts.warmup, opts.repeats)
        self.degrees = [2**i for i in range(opts.max_degree.bit_length()) if 2**i <= opts.max_degree]
        self.t0 = time.perf_counter()
        self.spec_inputs: tuple[str, ...] = ()  # the model's input names

    def log(self, msg: str) -> None:
        if self.opts.verbose:
            print(f"[galvatron profile model {time.perf_counter() - self.t0:6.1f}s] {msg}", flush=True)

    def time_layer(self, fwd_module: Callable[[Any], Any], carry: Any, checkpoint: bool) -> dict[int, tuple[float, float]]:
        from torch.utils.checkpoint import checkpoint as ckpt

        cases = {}
        for b in self.opts.batch_sizes:
            c = _leaf(carry, b)  # built once: the timed forward is the layer alone
            if checkpoint:
                cases[b] = lambda c=c: ckpt(fwd_module, c, use_reentrant=False)
            else:
                cases[b] = lambda c=c: fwd_module(c)
        return self.clock.fwd_bwd(cases, _backward)

    def time_layers(self, shards: dict[int, nn.Module], carry: Any,
                    checkpoint: bool) -> dict[int, dict[int, tuple[float, float]]]:
        """:meth:`time_layer` of several shards (by degree), all cases timed round-robin."""
        from torch.utils.checkpoint import checkpoint as ckpt

        cases = {}
        for d, shard in shards.items():
            for b in self.opts.batch_sizes:
                c = _leaf(carry, b)
                cases[(d, b)] = ((lambda c=c, s=shard: ckpt(s, c, use_reentrant=False)) if checkpoint
                                 else (lambda c=c, s=shard: s(c)))
        t = self.clock.fwd_bwd(cases, _backward)
        return {d: {b: t[(d, b)] for b in self.opts.batch_sizes} for d in shards}

    def saved_bytes(self, fn: Callable[[Any], Any], carry: Any, params: list[torch.Tensor]) -> int:
        _, got = measure_saved_bytes(fn, carry, exclude=params)
        return got

    def layer(self, lt_name: str, layer: nn.Module, carry: Any) -> dict[str, Any]:
        ls = self.spec.layer_specs[lt_name]
        res: dict[str, Any] = {"param_count": sum(p.numel() for p in layer.parameters()), "fwd_ms": {}, "bwd_ms": {},
                               "ckpt_fwd_ms": {}, "ckpt_bwd_ms": {}, "param_count_shard": {},
                               "act_bytes": {"none": {}, "megatron": {}, "ulysses": {}}, "ckpt_extra_saved_bytes": {},
                               "sources": {}}
        one = _leaf(carry, 1)
        shards: dict[int, nn.Module] = {}
        for d in self.degrees:
            try:
                shard = tp_shard(layer, d)
                _backward(shard(_leaf(carry, 1)))  # a degree that cannot run is found here
            except (ValueError, RuntimeError) as e:
                res["sources"][f"tp{d}"] = f"not measurable ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
                continue
            shards[d] = shard
        # every degree and batch size timed round-robin: a slow spell of a shared machine hits
        # all of them alike instead of bending the ratio between degrees
        timed = self.time_layers(shards, carry, checkpoint=False)
        timed_ckpt = self.time_layers(shards, carry, checkpoint=True) if self.opts.checkpoint else {}
        for d, shard in shards.items():
            t = timed[d]
            res["fwd_ms"][d] = [[b, f] for b, (f, _) in t.items()]
            res["bwd_ms"][d] = [[b, bw] for b, (_, bw) in t.items()]
            res["param_count_shard"][d] = sum(p.numel() for p in shard.parameters())
            if self.opts.checkpoint:
                tc = timed_ckpt[d]
                res["ckpt_fwd_ms"][d] = [[b, f] for b, (f, _) in tc.items()]
                res["ckpt_bwd_ms"][d] = [[b, bw] for b, (_, bw) in tc.items()]
            params = params_of(shard)
            res["act_bytes"]["none"][d] = self.saved_bytes(shard, _leaf(one), params)
            from torch.utils.checkpoint import checkpoint as ckpt

            # what a checkpointed layer saves besides its input (which it keeps referenced)
            res["ckpt_extra_saved_bytes"][d] = self.saved_bytes(lambda c, s=shard: ckpt(s, c, use_reentrant=False),
                                                        _leaf(one), params)
            if d > 1 and is_prenorm(layer) and self.seq % d == 0:
                res["act_bytes"]["megatron"][d] = self.saved_bytes(
                    megatron_sp_forward(shard, d, self.seq), seq_slice(one, d, self.seq), params)
                if ls.num_heads % d == 0 and (ls.num_kv_heads or ls.num_heads) % d == 0:
                    sim = ulysses_layer(layer, d, self.seq)
                    res["act_bytes"]["ulysses"][d] = self.saved_bytes(sim, seq_slice(one, d, self.seq),
                                                                      params_of(sim))
            self.log(f"{lt_name} d={d}: fwd/bwd ms at batch " + ", ".join(
                f"{b}: {f:.3f}/{bw:.3f}" for (b, f), (_, bw) in zip(res["fwd_ms"][d], res["bwd_ms"][d], strict=True))
                + f"; act {res['act_bytes']['none'][d]} B/sample")
        return res

    def embedding(self, parts: _Parts) -> dict[str, Any]:
        m, batch = parts.model, parts.batch
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        params = params_of(m.embed)
        res: dict[str, Any] = {"fwd_ms": {}, "bwd_ms": {}, "head_fwd_ms": {}, "head_bwd_ms": {},
                               "act_bytes": {}, "head_act_bytes": {}}
        subs = {b: {k: v[:b].clone() for k, v in inputs.items()} for b in self.opts.batch_sizes}
        t = self.clock.fwd_bwd({b: (lambda sub=sub: m.embed(sub)) for b, sub in subs.items()}, _backward)
        res["fwd_ms"][1] = [[b, f] for b, (f, _) in t.items()]
        res["bwd_ms"][1] = [[b, bw] for b, (_, bw) in t.items()]
        res["act_bytes"][1] = self.saved_bytes(lambda x: m.embed(x), {k: v[:1].clone() for k, v in inputs.items()}, params)
        vocab = getattr(self.cfg, "vocab_size", None)
        for d in self.degrees:
            head, local = head_shard(m, vocab, d)
            if d > 1 and not local:
                continue  # not split (a classifier, or a vocabulary d does not divide): filled later

            def head_loss(c, b, head=head, local=local):  # noqa: ANN001, ANN202
                labels = batch["labels"][:b]
                labels = labels % local if local else labels
                return m.loss(head(c), {"labels": labels})

            cases = {}
            for b in self.opts.batch_sizes:
                c = _leaf(parts.head_carry, b)
                cases[b] = lambda b=b, c=c, h=head_loss: h(c, b)
            th = self.clock.fwd_bwd(cases, _backward)
            res["head_fwd_ms"][d] = [[b, f] for b, (f, _) in th.items()]
            res["head_bwd_ms"][d] = [[b, bw] for b, (_, bw) in th.items()]
            res["head_act_bytes"][d] = self.saved_bytes(lambda c, h=head_loss: h(c, 1), _leaf(parts.head_carry, 1),
                                                        params_of(head))
        self.log("embedding fwd ms at batch " + ", ".join(f"{b}: {f:.3f}" for b, f in res["fwd_ms"][1])
                 + "; head+loss fwd ms at batch " + ", ".join(f"{b}: {f:.3f}" for b, f in res["head_fwd_ms"][1]))
        return res


# ------------------------------------------------------------------------------- assembly


def _ratio(points: list[list[float]]) -> float:
    """Per-sample ms from [(batch, ms)]: total time over total samples (the per-micro-batch
    overhead amortised over the profiled sizes; the embedding tables have no fixed term)."""
    return sum(t for _, t in points) / sum(b for b, _ in points)


def _fill(table: dict[int, float], degrees: list[int], how: str, sources: dict[str, str], what: str) -> dict[int, float]:
    """Complete a per-degree table: 'scale' = largest measured degree times d_m / d; 'copy' =
    the degree-1 value."""
    out = dict(table)
    dm = max(table)
    for d in degrees:
        if d not in out:
            out[d] = table[dm] * dm / d if how == "scale" else table[1]
            sources[f"{what}{d}"] = f"{'scaled' if how == 'scale' else 'copied'} from degree {dm if how == 'scale' else 1}"
    return dict(sorted(out.items()))


def _layer_profile(prof: _Profiler, lt: Any, res: dict[str, Any]) -> dict[str, Any]:
    ls = prof.spec.layer_specs[lt.name]
    src = res["sources"]
    if not res["fwd_ms"]:
        raise ValueError(f"layer type {lt.name}: no degree could be measured ({src})")
    fixed_f, per_f = fit_fixed_per_sample(res["fwd_ms"])
    fixed_b, per_b = fit_fixed_per_sample(res["bwd_ms"])
    lt.param_count = res["param_count"]
    lt.fwd_ms_fixed, lt.bwd_ms_fixed = fixed_f, fixed_b
    lt.fwd_ms_per_sample = _fill(per_f, prof.degrees, "scale", src, "time.tp")
    lt.bwd_ms_per_sample = _fill(per_b, prof.degrees, "scale", src, "time.tp")
    acts: dict[str, dict[int, int]] = {}
    for kind in ("none", "megatron", "ulysses"):
        table = {}
        for d in prof.degrees:
            if d in res["act_bytes"][kind]:
                table[d] = int(res["act_bytes"][kind][d])
                continue
            if kind != "none" and d == 1:
                continue
            tp, sp = (1, d) if kind == "ulysses" else (d, 1)
            table[d] = ls.act_bytes(1, prof.seq, prof.cb, tp=tp, sp=sp, sp_kind=kind, ln_stats_bytes=prof.ln_bytes)
            src[f"act.{kind}{d}"] = "analytic spec"
        acts[kind] = table
    acts["megatron"][1] = acts["ulysses"][1] = acts["none"][1]  # degree 1: no sequence split
    lt.act_bytes_per_sample = {k: dict(sorted(v.items())) for k, v in acts.items()}
    fit = {"fwd_ms_fixed": fixed_f, "bwd_ms_fixed": fixed_b}
    if res["ckpt_bwd_ms"]:
        cf, cb = fit_fixed_per_sample(res["ckpt_bwd_ms"])
        fit["ckpt_bwd_ms_fixed"], fit["ckpt_bwd_ms_per_sample"] = cf, cb
    return {**res, "fit": fit}


def _embedding_profile(prof: _Profiler, emb: Any, res: dict[str, Any]) -> None:
    src: dict[str, str] = {}
    vocab_split = bool(getattr(prof.cfg, "vocab_size", None))
    e_f, e_b = _ratio(res["fwd_ms"][1]), _ratio(res["bwd_ms"][1])
    # Without a vocabulary the runtime keeps the embedding/head data parallel: degree 1 only,
    # so the search offers nothing else there (see profiles/analytic.py).
    degrees = prof.degrees if vocab_split else [1]
    emb.embed_fwd_ms_per_sample = {d: e_f for d in degrees}
    emb.embed_bwd_ms_per_sample = {d: e_b for d in degrees}
    emb.embed_act_bytes_per_sample = {d: int(res["act_bytes"][1]) for d in degrees}
    how = "scale" if vocab_split else "copy"
    head_f = {d: _ratio(p) for d, p in res["head_fwd_ms"].items() if d in degrees}
    head_b = {d: _ratio(p) for d, p in res["head_bwd_ms"].items() if d in degrees}
    emb.head_fwd_ms_per_sample = _fill(head_f, degrees, how, src, "head.time.tp")
    emb.head_bwd_ms_per_sample = _fill(head_b, degrees, how, src, "head.time.tp")
    acts = {d: int(v) for d, v in res["head_act_bytes"].items() if d in degrees}
    for d in degrees:
        if d not in acts:
            acts[d] = prof.spec.head.act_bytes(1, prof.seq, prof.cb, tp=d, ln_stats_bytes=prof.ln_bytes) \
                if vocab_split else acts[1]
            src[f"head.act.tp{d}"] = "analytic spec" if vocab_split else "copied from degree 1"
    emb.head_act_bytes_per_sample = dict(sorted(acts.items()))
    res["sources"] = src


def core_share(processes: int, cores: int | None = None) -> float:
    """How many times slower one process computes when ``processes`` single-threaded processes
    share ``cores`` CPU cores (default: this machine's) at once: ``max(1, processes / cores)``.
    The profiler measures one process alone; the training job runs ``processes`` of them."""
    cores = cores or os.cpu_count() or 1
    return max(1.0, processes / cores)


def scale_compute_times(mp: ModelProfile, factor: float) -> None:
    """Multiply every compute time of ``mp`` (layer types' fixed and per-sample forward and
    backward, selective recompute, embedding and head) by ``factor``, in place."""
    for lt in mp.layer_types:
        for table in (lt.fwd_ms_per_sample, lt.bwd_ms_per_sample, lt.selective_recompute_ms_per_sample):
            for d in table:
                table[d] *= factor
        lt.fwd_ms_fixed *= factor
        lt.bwd_ms_fixed *= factor
    e = mp.embedding
    for table in (e.embed_fwd_ms_per_sample, e.embed_bwd_ms_per_sample, e.head_fwd_ms_per_sample,
                  e.head_bwd_ms_per_sample):
        for d in table:
            table[d] *= factor


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: {name!r} is not a torch device; accepted: 'cpu', 'cuda', 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device: {name!r} is not supported; accepted: 'cpu', 'cuda'")
    return dev


def profile_model(model: str, seq_len: int | None = None, precision: str = "bf16",
                  opts: ModelProfilerOptions | None = None, **overrides: Any) -> ModelProfile:
    """Measure a model from ``galvatron.models.list()`` (with config ``overrides``) and
    return its :class:`ModelProfile` (``source="measured"``; raw points and which values are
    measured in ``measurements``)."""
    from galvatron import models
    from galvatron.profiles.analytic import model_profile

    opts = opts or ModelProfilerOptions()
    opts.validate()
    if precision not in _DTYPES:
        raise ValueError(f"precision: {precision!r} is not accepted; accepted: {', '.join(_DTYPES)}")
    device = _device(opts.device)
    base = model_profile(model, seq_len=seq_len, precision=precision, max_degree=opts.max_degree, **overrides)
    cfg = models.get_config(model, **overrides)
    if seq_len is not None and hasattr(cfg, "max_seq_len") and seq_len > cfg.max_seq_len:
        cfg = cfg.replace(max_seq_len=seq_len)
    spec = models.spec(cfg)
    seq = base.seq_len
    prof = _Profiler(model, cfg, spec, seq, precision, opts, device)
    prof.spec_inputs = models.build(cfg, device="meta").input_names
    if opts.extra_seq_lens and "pixel_values" in prof.spec_inputs:
        raise ValueError("extra_seq_lens: a vision model's sequence length is fixed by its image size")
    prof.log(f"{model}: seq {seq}, {precision} on {device}, degrees {prof.degrees}, batch sizes "
             f"{list(opts.batch_sizes)}, layer types {list(spec.layer_specs)}")
    parts = _Parts(cfg, seq, device, prof.dtype, max(opts.batch_sizes), opts.seed)
    layers = {}
    for lt in base.layer_types:
        res = prof.layer(lt.name, parts.layers[lt.name], parts.carries[lt.name])
        layers[lt.name] = _layer_profile(prof, lt, res)
    emb = prof.embedding(parts)
    seq_scaling = _seq_scaling(prof, cfg, base.layer_types) if opts.extra_seq_lens else {}
    e_ids = {id(p): p.numel() for p in parts.model.embed.parameters()}
    h_ids = {id(p): p.numel() for p in parts.model.head.parameters()}
    tied = sum(n for i, n in e_ids.items() if i in h_ids)
    base.embedding.tied_param_count = tied
    base.embedding.embed_param_count = sum(e_ids.values()) - tied
    base.embedding.head_param_count = sum(h_ids.values()) - tied
    _embedding_profile(prof, base.embedding, emb)
    share = core_share(opts.processes) if device.type == "cpu" else 1.0
    if share != 1.0:
        scale_compute_times(base, share)
    base.source = "measured"
    base.measurements = {
        "processes": opts.processes, "core_share": share,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "batch_sizes": list(opts.batch_sizes), "warmup": opts.warmup,
        "repeats": opts.repeats, "config": _config_dict(cfg), "layers": layers, "embedding": emb,
        "seq_scaling": seq_scaling, "elapsed_s": time.perf_counter() - prof.t0,
    }
    base.to_tables()  # validates
    return base


def _seq_scaling(prof: _Profiler, cfg: Any, layer_types: list[Any]) -> dict[int, Any]:
    """Forward/backward ``[batch, ms]`` points of every layer type and measurable degree at the
    extra sequence lengths (raw data for choosing a sequence length; the profile's tables
    stay at ``seq_len``: one profile describes one sequence length)."""
    out: dict[int, Any] = {}
    for seq in prof.opts.extra_seq_lens:
        c = cfg.replace(max_seq_len=seq) if hasattr(cfg, "max_seq_len") and seq > cfg.max_seq_len else cfg
        parts = _Parts(c, seq, prof.device, prof.dtype, max(prof.opts.batch_sizes), prof.opts.seed)
        per_type: dict[str, Any] = {}
        for lt in layer_types:
            res: dict[str, Any] = {"fwd_ms": {}, "bwd_ms": {}}
            for d in prof.degrees:
                try:
                    t = prof.time_layer(tp_shard(parts.layers[lt.name], d), parts.carries[lt.name], False)
                except (ValueError, RuntimeError):
                    continue
                res["fwd_ms"][d] = [[b, f] for b, (f, _) in t.items()]
                res["bwd_ms"][d] = [[b, bw] for b, (_, bw) in t.items()]
            per_type[lt.name] = res
            prof.log(f"seq {seq}: {lt.name} d=1 fwd ms at batch "
                     + ", ".join(f"{b}: {f:.3f}" for b, f in res["fwd_ms"].get(1, [])))
        out[seq] = per_type
    return out


def _config_dict(cfg: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = v.value if hasattr(v, "value") else (list(v) if isinstance(v, tuple) else v)
    return out
