"""Data parallelism of one unit (a layer, the embedding, the head) on its weight group.

The loss of every rank is its local token-loss sum divided by the global token count, so the
gradient of a parameter is the **sum** over its weight group (dp*sp ranks) of local gradients.

- DDP: gradients live in one flat buffer per unit; its asynchronous all-reduce (sum) starts
  when the unit's gradients of the last micro-batch are all accumulated (hand-written; torch
  DDP crashes inside pipelines).
- ZeRO-1: one flat reduce-scatter (sum) per unit, AdamW on this rank's flat shard (states
  ``8 * p_shard`` bytes), then an all-gather of the updated flat parameters.
- ZeRO-2 / ZeRO-3: FSDP2 ``fully_shard`` on the unit's weight-group mesh,
  ``reshard_after_forward`` False / True, gradient divide factor 1 (sum). Under a bf16/fp16
  plan, ``MixedPrecisionPolicy(param_dtype=<compute dtype>, reduce_dtype=float32,
  output_dtype=float32)``: the fp32 shard is cast and all-gathered as a 2-byte copy (ZeRO-2
  keeps that copy until backward), the unit's input is cast to the compute dtype and its
  output back to float32 (the stream between units is float32), gradients are computed in the
  compute dtype and reduce-scattered in float32 into the fp32 sharded gradient; the master
  weights and AdamW states stay fp32. After each unit's post-backward its float32 reduce-
  scatter input is dropped (``_ReleaseReduceScatterInput``).

Gradient reduction dtypes (``GRAD_REDUCE_DTYPE``): DDP and ZeRO-1 units keep fp32 parameters
(autocast casts per op), so their gradients are fp32 and are all-reduced / reduce-scattered in
fp32; FSDP2 units reduce in fp32 (``reduce_dtype``) whatever the plan's precision.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.optim.adamw import adamw

from galvatron.parallel import instrument
from galvatron.parallel.instrument import region
from galvatron.parallel.packing import _is_fake
from galvatron.parallel.tensor_parallel import all_gather_single, reduce_scatter_single
from galvatron.parallel.tied import EmbedHead
from galvatron.parallel.units import Unit
from galvatron.plan import DpType, Plan, Precision

GRAD_REDUCE_DTYPE = torch.float32  # every gradient reduction (DDP, ZeRO-1, FSDP2)


def apply_fsdp(module: nn.Module, group, dp_type: DpType, device_type: str = "cpu",
               param_dtype: torch.dtype | None = None) -> nn.Module:
    """Shard ``module`` over ``group`` with FSDP2 (ZeRO-2: keep the gathered parameters from
    forward to backward; ZeRO-3: reshard after forward). ``param_dtype`` (bf16/fp16 plans):
    gather and compute with parameters of that dtype, reduce gradients in float32."""
    mesh = DeviceMesh.from_group(group, device_type)
    # Under a bf16/fp16 plan FSDP2 casts the unit's input to the compute dtype (the unit runs
    # wholly in it) and its output back to float32: between units the residual stream is
    # float32 whatever each unit's dp type, as in DDP / ZeRO-1 units under autocast, so a
    # unit's activations depend on its own strategy only (docs/cost_model.md)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=GRAD_REDUCE_DTYPE,
                              output_dtype=torch.float32 if param_dtype is not None else None)
    fully_shard(module, mesh=mesh, reshard_after_forward=dp_type is DpType.ZERO3, mp_policy=mp)
    module.set_gradient_divide_factor(1.0)
    module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    # registered after fully_shard and prepended: runs before FSDP2's own pre-forward hook, so
    # the release runs in backward right after FSDP2's post-backward of this unit
    module.register_forward_pre_hook(_release_after_post_backward, prepend=True)
    return module


class _ReleaseReduceScatterInput(torch.autograd.Function):
    """Identity on a unit's input; in backward (after the unit's FSDP2 post-backward, which
    reduce-scatters its gradients) drops the unit's retained reduce-scatter input.

    Every unit is its own FSDP2 root (units live on different meshes), and a root keeps the
    float32 flat reduce-scatter input of its last post-backward until its root callback at
    the end of the whole ``backward()`` call: the unsharded gradients of every ZeRO-2/3 unit
    of a chunk were alive at once (measured: 63.8 GiB on a 70B pipeline stage of 20 ZeRO-2
    layers, docs/cost_model.md). Released here, one unit's copy is alive at a time, as the
    ZeRO-2/3 plan promises (sharded gradients)."""

    @staticmethod
    def forward(ctx, module, x):  # noqa: ANN001, ANN205
        ctx.module = module
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        release_reduce_scatter_inputs(ctx.module)
        return None, g


def release_reduce_scatter_inputs(module: nn.Module) -> None:
    """Wait for (on the compute stream) and drop the reduce-scatter inputs FSDP2 keeps for
    ``module``'s root context; what FSDP2's own next post-backward in a shared context does."""
    state = module._get_fsdp_state()
    states = getattr(getattr(state, "_comm_ctx", None), "reduce_scatter_states", None)
    if states is None:  # private FSDP2 fields of torch 2.13; elsewhere FSDP2 keeps them to the end
        return  # of backward: more memory than predicted, the same results
    for rs in states:
        if rs.event is not None:
            state._device_handle.current_stream().wait_event(rs.event)
    states.clear()


def _release_after_post_backward(module: nn.Module, args: tuple):
    if not torch.is_grad_enabled():
        return None
    for i, a in enumerate(args):  # the first tensor input that carries a gradient
        if isinstance(a, torch.Tensor) and a.requires_grad:
            return (*args[:i], _ReleaseReduceScatterInput.apply(module, a), *args[i + 1:])
    return None


def flat_grads(params: list[nn.Parameter]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])


def all_reduce_grads(params: list[nn.Parameter], group) -> None:
    """Sum the gradients of ``params`` over ``group`` (one flat all-reduce, fp32)."""
    if group is None or not params:
        return
    with region("dp_comm"):
        _all_reduce_grads(params, group)


def _all_reduce_grads(params: list[nn.Parameter], group) -> None:
    flat = flat_grads(params)
    assert flat.dtype == GRAD_REDUCE_DTYPE, flat.dtype
    dist.all_reduce(flat, group=group)
    off = 0
    for p in params:
        numel = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[off:off + numel].view_as(p))  # in place: no second gradient copy
        off += numel


class ZeroOneShard:
    """ZeRO-1 state of one unit: flat reduce-scatter of gradients, AdamW on a flat shard."""

    def __init__(self, params: list[nn.Parameter], group) -> None:
        self.params, self.group = params, group
        self.group_size = dist.get_world_size(group) if group is not None else 1
        self.rank = dist.get_rank(group) if group is not None else 0
        self.total = sum(p.numel() for p in params)
        self.shard = -(-self.total // self.group_size)
        self.lo = min(self.rank * self.shard, self.total)
        self.hi = min(self.lo + self.shard, self.total)
        self.grad: torch.Tensor | None = None  # this rank's summed gradient shard

    def reduce_scatter(self) -> None:
        flat = flat_grads(self.params)
        assert flat.dtype == GRAD_REDUCE_DTYPE, flat.dtype
        pad = self.shard * self.group_size - self.total
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        if self.group is None:
            self.grad = flat[: self.total]
            return
        out = flat.new_empty(self.shard)
        with region("dp_comm"):
            reduce_scatter_single(out, flat, group=self.group)
        self.grad = out[: self.hi - self.lo]

    def segments(self):
        """(param, start, stop) pieces of each parameter's flat range inside this shard,
        with offsets relative to the parameter."""
        off = 0
        for p in self.params:
            a, b = max(off, self.lo), min(off + p.numel(), self.hi)
            if b > a:
                yield p, a - off, b - off, a - self.lo
            off += p.numel()

    def flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def all_gather(self, shard_values: torch.Tensor) -> None:
        full = shard_values
        if self.group is not None:
            pad = self.shard - shard_values.numel()
            if pad:
                full = torch.cat([shard_values, shard_values.new_zeros(pad)])
            buf = full.new_empty(self.shard * self.group_size)
            with region("dp_comm"):
                all_gather_single(buf, full.contiguous(), group=self.group)
            full = buf[: self.total]
        off = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(full[off:off + p.numel()].view_as(p))
                off += p.numel()


class ZeroOneAdamW(torch.optim.Optimizer):
    """AdamW (torch's functional kernel, identical numerics) on flat ZeRO-1 shards.

    Each "parameter" of this optimizer is one unit's :class:`ZeroOneShard`, represented by a
    flat shard tensor kept only for the optimizer step."""

    def __init__(self, shards: list[ZeroOneShard], lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2) -> None:
        self.shards = shards
        keys = [s.params[0] for s in shards]
        super().__init__(keys or [torch.zeros(1, requires_grad=True)],
                         dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._key_to_shard = {id(k): s for k, s in zip(keys, shards, strict=True)}

    @torch.no_grad()
    def step(self, closure=None):
        g = self.param_groups[0]
        for key in g["params"]:
            shard = self._key_to_shard.get(id(key))
            if shard is None or shard.grad is None:
                continue
            st = self.state[key]
            shard_numel = shard.hi - shard.lo
            if not st:
                st["step"] = torch.tensor(0.0)  # on CPU, as torch.optim keeps it
                st["exp_avg"] = shard.grad.new_zeros(shard_numel)
                st["exp_avg_sq"] = shard.grad.new_zeros(shard_numel)
            values = shard.flat_params()[shard.lo:shard.hi].clone()
            adamw(
                [values], [shard.grad], [st["exp_avg"]], [st["exp_avg_sq"]], [], [st["step"]],
                foreach=False, amsgrad=False, beta1=g["betas"][0], beta2=g["betas"][1],
                lr=g["lr"], weight_decay=g["weight_decay"], eps=g["eps"], maximize=False)
            shard.all_gather(values)
            shard.grad = None


class OverlappedAllReduce:
    """DDP gradient sync of one unit overlapped with backward.

    :meth:`prepare` (called by ``zero_grad``) points every parameter's ``.grad`` at a slice of
    one zeroed flat buffer, so backward accumulates into it in place (no copies, like torch
    DDP's ``gradient_as_bucket_view``). When every parameter has accumulated its gradient of
    the last micro-batch (post-accumulate hooks), one asynchronous all-reduce (sum) of the
    buffer starts; :meth:`finish` waits for it. If a gradient was replaced (not a view of the
    buffer any more) the gradients are copied into a fresh flat tensor first; if some
    parameter never received a gradient, :meth:`finish` syncs blocking (every rank of the
    group runs the same graph, so all take the same path)."""

    def __init__(self, params: list[nn.Parameter], group, num_microbatches: int) -> None:
        self.params, self.group, self.m = params, group, num_microbatches
        self.count, self.work, self.flat, self.buffer = 0, None, None, None
        self.issued = None  # instrumentation: when the all-reduce was started
        for p in params:
            p.register_post_accumulate_grad_hook(self._hook)

    def prepare(self) -> None:
        if self.buffer is None:
            p0 = self.params[0]
            self.buffer = torch.zeros(sum(p.numel() for p in self.params), dtype=GRAD_REDUCE_DTYPE,
                                      device=p0.device)
        else:
            self.buffer.zero_()
        off = 0
        for p in self.params:
            p.grad = self.buffer[off:off + p.numel()].view_as(p)
            off += p.numel()

    def _views_intact(self) -> bool:
        if self.buffer is None:
            return False
        if _is_fake(self.buffer):  # no storage to compare (galvatron check --fake); in place
            return True
        base, size = self.buffer.data_ptr(), self.buffer.element_size()
        off = 0
        for p in self.params:
            if p.grad is None or p.grad.data_ptr() != base + off * size:
                return False
            off += p.numel()
        return True

    def _hook(self, _p) -> None:
        self.count += 1
        if self.group is not None and self.count == self.m * len(self.params):
            self.flat = self.buffer if self._views_intact() else flat_grads(self.params)
            self.work = dist.all_reduce(self.flat, group=self.group, async_op=True)
            self.issued = instrument.clock()

    def finish(self) -> None:
        if self.group is not None:
            if self.work is None:
                all_reduce_grads(self.params, self.group)
            else:
                with region("dp_comm"):
                    self.work.wait()
                instrument.async_span(self.issued)
                if self.flat is not self.buffer:
                    off = 0
                    for p in self.params:
                        p.grad.copy_(self.flat[off:off + p.numel()].view_as(p))
                        off += p.numel()
        self.count, self.work, self.flat = 0, None, None


# ---------------------------------------------------------------------------- per unit, and the optimizers

# FSDP2 gathers and computes with parameters of the plan's compute dtype (fp32 master shards)
_PARAM_DTYPE = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def apply_data_parallel(units: list[Unit], plan: Plan, device: torch.device):
    """FSDP2 / ZeRO-1 / DDP per unit (FSDP2 replaces parameters: after the metadata was taken).
    Returns the AdamW parameters and the ZeRO-1 shards; a shared parameter goes to its first
    unit only."""
    adam_params, shards = [], []
    seen: set[int] = set()
    for u in units:
        s = u.strategy
        if u.replicated:  # synced by finish_grads, stepped by AdamW on every holder
            u.dp_params = [p for p in u.params() if id(p) not in seen]
            seen.update(id(p) for p in u.dp_params)
            adam_params.extend(u.dp_params)
            continue
        if s.dp_type in (DpType.ZERO2, DpType.ZERO3) and u.weight_group is not None:
            # pp=1: the head's backward follows its forward at once, so ZeRO-3 keeps its
            # gathered tensors from forward to backward (as FSDP2 does for a root module)
            last = plan.pp == 1 and u.name == "head"
            apply_fsdp(u.module, u.weight_group, DpType.ZERO2 if last else s.dp_type, device.type,
                       param_dtype=_PARAM_DTYPE.get(plan.precision))
            u.fsdp = True
            if isinstance(u.module, EmbedHead):
                u.module.zero3 = s.dp_type is DpType.ZERO3
                u.module.low_precision_params = plan.precision in _PARAM_DTYPE
        params = [p for p in u.params() if id(p) not in seen]
        seen.update(id(p) for p in params)
        u.dp_params = params
        if s.dp_type is DpType.ZERO1 and u.weight_group is not None:
            u.zero1 = ZeroOneShard(params, u.weight_group)
            shards.append(u.zero1)
        else:
            adam_params.extend(params)
            if u.weight_group is not None and params and not u.fsdp:
                u.ddp = OverlappedAllReduce(params, u.weight_group, plan.num_microbatches)
    return adam_params, shards


class Optimizers:
    """AdamW over DDP/ZeRO-2/3 parameters plus :class:`ZeroOneAdamW` over ZeRO-1 shards."""

    def __init__(self, params, shards, ddp=(), **kw) -> None:
        self.ddp = list(ddp)
        self.adamw = torch.optim.AdamW(params, foreach=False, **kw) if params else None
        self.zero1 = ZeroOneAdamW(shards, **kw) if shards else None
        self.params = params

    @property
    def optimizers(self):
        return [o for o in (self.adamw, self.zero1) if o is not None]

    def zero_grad(self):
        for p in self.params:
            p.grad = None
        for d in self.ddp:  # DDP units accumulate into zeroed flat buffers
            d.prepare()
        if self.zero1 is not None:
            for s in self.zero1.shards:
                for p in s.params:
                    p.grad = None

    def step(self):
        for o in self.optimizers:
            o.step()
