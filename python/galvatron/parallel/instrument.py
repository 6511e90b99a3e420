"""Off-by-default instrumentation of the runtime: wall time per category and live tensor bytes.

``galvatron check`` and the training job turn it on around the steps they measure; otherwise
every hook is one ``None`` test. Categories (the cost model's terms):

==================  ==============================================================
``forward``         a chunk's forward (a unit's compute), collectives excluded
``backward``        backward compute (pp=1: ``loss.backward()``; pp>1: a stage's backward)
``recompute``       the forward of a checkpointed layer re-run inside backward
``tp_comm``         tensor-parallel and Megatron-SP collectives (incl. vocab-parallel loss)
``sp_comm``         Ulysses all-to-alls
``dp_comm``         data-parallel: DDP wait, ZeRO-1 reduce-scatter/all-gather, FSDP2
                    all-gathers and reduce-scatters, tied/shared gradient sums
``redistribution``  activation re-layout between layers (all-to-all on the stage group)
``pipeline``        inside the pipeline schedule but outside every unit: p2p and bubble
``optimizer``       AdamW (and gradient clipping), collectives excluded
``other``           the rest of the step (loss all-reduce, input handling)
==================  ==============================================================

Regions nest: a region's time excludes the regions opened inside it, so the categories add up
to the step's wall time. Collectives are synchronous on gloo, so their region time is the
*exposed* time; DDP's all-reduce runs in the background during backward and only its wait is
exposed (its issue-to-completion span is kept as ``dp_comm_async_span``). On CUDA the spans are
CUDA events on the current stream, read after a synchronise at the end of the step.

Memory: :class:`LiveTensorTracker` (torch's ``MemTracker`` without its per-module statistics,
which refuse a module called once per micro-batch) records the peak of live tensor bytes by
kind; on CUDA :func:`peak_bytes` is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Any

import torch

CATEGORIES = ("forward", "backward", "recompute", "tp_comm", "sp_comm", "dp_comm", "redistribution",
              "pipeline", "optimizer", "other")

_active: Recorder | None = None
_NULL = contextlib.nullcontext()


class _Span:
    __slots__ = ("cat", "start", "end", "child")

    def __init__(self, cat: str, start: Any) -> None:
        self.cat, self.start, self.end, self.child = cat, start, None, []


class Recorder:
    """Exclusive wall time per category over the regions opened while it is active."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.cuda = torch.device(device).type == "cuda"
        self.roots: list[_Span] = []
        self._stack: list[_Span] = []
        self.async_spans: list[float] = []  # DDP all-reduce issue..completion (upper bound)

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def open(self, cat: str) -> _Span:
        span = _Span(cat, self._now())
        (self._stack[-1].child if self._stack else self.roots).append(span)
        self._stack.append(span)
        return span

    def close(self, span: _Span) -> None:
        span.end = self._now()
        top = self._stack.pop()
        assert top is span, "instrument: regions closed out of order"

    def in_category(self, cat: str) -> bool:
        return any(s.cat == cat for s in self._stack)

    def _elapsed(self, span: _Span) -> float:
        if self.cuda:
            return span.start.elapsed_time(span.end) / 1e3
        return span.end - span.start

    def totals(self) -> dict[str, float]:
        """Seconds per category (exclusive of nested regions); closes nothing."""
        if self.cuda:
            torch.cuda.synchronize()
        out: dict[str, float] = defaultdict(float)

        def walk(span: _Span) -> float:
            if span.end is None:
                return 0.0
            whole = self._elapsed(span)
            inner = sum(walk(c) for c in span.child)
            out[span.cat] += max(0.0, whole - inner)
            return whole

        for s in self.roots:
            walk(s)
        return {c: out.get(c, 0.0) for c in CATEGORIES}

    def reset(self) -> None:
        self.roots, self._stack, self.async_spans = [], [], []


def active() -> Recorder | None:
    return _active


def region(cat: str | None):
    """Context manager timing a region of category ``cat`` (no-op when not recording)."""
    rec = _active
    if rec is None or cat is None:
        return _NULL
    return _Region(rec, cat)


class _Region:
    __slots__ = ("rec", "cat", "span")

    def __init__(self, rec: Recorder, cat: str) -> None:
        self.rec, self.cat, self.span = rec, cat, None

    def __enter__(self):
        self.span = self.rec.open(self.cat)
        return self

    def __exit__(self, *exc) -> None:
        self.rec.close(self.span)


def in_backward() -> bool:
    rec = _active
    return rec is not None and rec.in_category("backward")


@contextlib.contextmanager
def recording(rec: Recorder):
    """Make ``rec`` the active recorder (and time FSDP2's collectives) inside the block."""
    global _active
    prev = _active
    _active = rec
    undo = _patch_fsdp()
    try:
        yield rec
    finally:
        undo()
        _active = prev


def _patch_fsdp():
    """Time FSDP2's all-gather (issue and copy-out/wait) and reduce-scatter as ``dp_comm``:
    the functions its parameter groups call are wrapped for the recording only."""
    try:
        from torch.distributed.fsdp._fully_shard import _fsdp_param_group as G
    except ImportError:  # another torch: FSDP2 communication stays inside forward/backward
        return lambda: None
    saved = {}
    for name in ("foreach_all_gather", "foreach_all_gather_copy_out", "foreach_reduce"):
        fn = getattr(G, name, None)
        if fn is None:
            continue
        saved[name] = fn

        def wrapped(*args, _fn=fn, **kwargs):
            with region("dp_comm"):
                return _fn(*args, **kwargs)

        setattr(G, name, wrapped)

    def undo() -> None:
        for name, fn in saved.items():
            setattr(G, name, fn)

    return undo


# ----------------------------------------------------------------------------- memory
def live_tensor_tracker():
    """A MemTracker that records the peak of live tensor bytes by kind without per-module
    statistics (those refuse a module that runs once per micro-batch)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    class LiveTensorTracker(MemTracker):
        def _pre_fw_hook(self, module, inputs) -> None:
            pass

        def _post_fw_hook(self, module, inputs, outputs) -> None:
            pass

        def _pre_bw_hook(self, module, args) -> None:
            pass

        def _post_bw_hook(self, module, args) -> None:
            pass

        def track_model(self, *modules, optimizers=()) -> None:
            """Parameters (with gradient hooks: gradients are counted as gradients), buffers
            and optimizer states that exist before the tracked block."""
            for m in modules:
                self._track_module_params_and_buffers(m, install_grad_hooks=True)
            self.track_external(*optimizers)

        def peak_by_kind(self) -> dict[str, int]:
            """Bytes at the peak (summed over devices): param, buffer, grad, activation
            (created in forward), temp (created in backward), optimizer, other, total."""
            snap = self.get_tracker_snapshot("peak")
            out: dict[str, int] = defaultdict(int)
            for dev_snap in snap.values():
                for k, v in dev_snap.items():
                    key = k if isinstance(k, str) else k.value
                    out[_KIND_NAMES.get(key, key)] += int(v)
            return dict(out)

    return LiveTensorTracker()


_KIND_NAMES = {"Parameter": "param", "Buffer": "buffer", "Gradient": "grad", "Activation": "activation",
               "Temp": "temp", "Optstate": "optimizer", "Other": "other", "Total": "total"}


def clock():
    """A timestamp for :func:`async_span` (None when not recording)."""
    rec = _active
    return None if rec is None else rec._now()


def async_span(start) -> None:
    """Record a background operation's span from ``start`` (:func:`clock`) until now."""
    rec = _active
    if rec is None or start is None:
        return
    end = rec._now()
    if rec.cuda:
        end.synchronize()
    rec.async_spans.append(start.elapsed_time(end) / 1e3 if rec.cuda else end - start)
