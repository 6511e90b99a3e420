"""ModelSpec: parameter counts equal the built models, activation bytes equal what autograd
actually saves (measured with saved_tensors_hooks, unique storages, parameters excluded)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import galvatron.models as M
from galvatron.models.spec import measure_saved_bytes
from tests.unit.models_hf_util import DEBUG, debug_batch, debug_labels

SHAPES = [(2, 8, False), (3, 16, False), (2, 8, True)]


def _leaf(carry: M.Carry) -> M.Carry:
    def f(t):
        return t.detach().requires_grad_() if t is not None and t.is_floating_point() else t
    return dataclasses.replace(carry, hidden=f(carry.hidden), memory=f(carry.memory))


def measured_parts(model, inputs, labels):
    """Measured saved bytes of embed, each layer, and head+loss (train mode)."""
    params = [*model.parameters(), *model.buffers()]
    dtype = next(model.parameters()).dtype
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
    carry, embed = measure_saved_bytes(model.embed, inputs, exclude=params)
    layers = []
    for layer in model.layers:
        carry, got = measure_saved_bytes(layer, _leaf(carry), exclude=params)
        layers.append(got)
    carry = _leaf(carry)
    _, head = measure_saved_bytes(
        lambda: model.loss(model.head(carry), {"labels": labels}), exclude=params)
    return embed, layers, head


@pytest.mark.parametrize("name", DEBUG)
def test_spec_param_counts_equal_the_built_model(name):
    model = M.build(name, seed=0)
    spec = M.spec(name)
    assert spec.param_count() == model.num_params()
    assert sum(p.numel() for p in model.embed.parameters()) == spec.embed.param_count
    assert sum(p.numel() for p in model.head.parameters()) == spec.head.param_count
    for i, layer in enumerate(model.layers):
        assert sum(p.numel() for p in layer.parameters()) == spec.layer(i).param_count
    assert list(spec.layer_types) == model.layer_types()


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("name", DEBUG)
def test_spec_activation_bytes_equal_measured_saved_tensors(name, backend):
    """Exact (0 bytes error) on the default CPU SDPA path and on the math path."""
    model = M.build(name, seed=0, attn_backend=backend).train()
    spec = M.spec(model.config)
    for b, s, padded in SHAPES:
        inputs = debug_batch(name, b, s, padded)
        embed, layers, head = measured_parts(model, inputs, debug_labels(name, inputs))
        seq = spec.seq_len if spec.family in ("vit", "swin") else s
        kw = dict(dtype_bytes=4, padded=padded, attn_math=backend == "math")
        assert embed == spec.embed.act_bytes(b, seq, **kw)
        assert layers == [spec.layer(i).act_bytes(b, seq, **kw) for i in range(len(layers))]
        assert head == spec.head.act_bytes(b, seq, **kw)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("name", DEBUG)
def test_spec_activation_bytes_in_bf16_equal_measured(name, backend):
    """bf16 on CPU, exact: float32 RMSNorm internals and SDPA's float32 fallback for trainable
    biases included; LayerNorm's mean/rstd are bf16 on CPU (``ln_stats_bytes=2``)."""
    model = M.build(name, seed=0, attn_backend=backend).to(torch.bfloat16).train()
    spec = M.spec(model.config)
    b, s = 2, 16
    inputs = debug_batch(name, b, s)
    embed, layers, head = measured_parts(model, inputs, debug_labels(name, inputs))
    seq = spec.seq_len if spec.family in ("vit", "swin") else s
    kw = dict(dtype_bytes=2, attn_math=backend == "math", ln_stats_bytes=2)
    predicted = [spec.embed.act_bytes(b, seq, **kw), head := spec.head.act_bytes(b, seq, **kw)]
    predicted += [spec.layer(i).act_bytes(b, seq, **kw) for i in range(len(layers))]
    assert [embed, head, *layers] == predicted


@pytest.mark.parametrize("padded", [False, True])
def test_spec_sliding_window_mask_bytes_equal_measured(padded):
    model = M.build("llama-debug", seed=0, sliding_window=4).train()
    spec = M.spec(model.config)
    inputs = debug_batch("llama-debug", 2, 16, padded)
    _, layers, _ = measured_parts(model, inputs, debug_labels("llama-debug", inputs))
    assert layers == [spec.layer(i).act_bytes(2, 16, 4, padded=padded) for i in range(2)]


def _shard_linear(lin: torch.nn.Linear, tp: int, dim: int) -> torch.nn.Linear:
    n_out, n_in = lin.weight.shape
    shape = (n_out // tp, n_in) if dim == 0 else (n_out, n_in // tp)
    new = torch.nn.Linear(shape[1], shape[0], bias=lin.bias is not None)
    with torch.no_grad():
        new.weight.copy_(lin.weight[: shape[0], : shape[1]])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[: shape[0]])
    return new


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_spec_tp_activation_bytes_equal_a_measured_tp_shard(name):
    """A Megatron tp=2 shard of a layer (half the heads, half the MLP columns; rank 0's
    slices) saves what ``act_bytes(tp=2)`` predicts: replicated norm side, halved inside."""
    model = M.build(name, seed=0).train()
    layer, tp = model.layers[0], 2
    _shard_block(layer, tp)
    x = torch.randn(2, 16, 64, requires_grad=True)
    _, got = measure_saved_bytes(layer, M.Carry(x), exclude=list(layer.parameters()))
    assert got == M.spec(name).layer(0).act_bytes(2, 16, 4, tp=tp)


def test_spec_gpt_layer_matches_korthikanti_without_dropout():
    """Korthikanti et al. 2022: 34*s*b*h bytes per GPT layer in fp16 (flash attention: no
    a*s^2 term) of which 2*s*b*h are dropout masks; ours trains without dropout -> 32*s*b*h
    plus float32 norm statistics (4 per token per norm... 2 norms) and log-sum-exp (4*a)."""
    spec = M.spec("gpt2-xl")
    layer = spec.layer(0)
    b, s, h, a = 4, 1024, 1600, 25
    stats = b * s * (2 * 2 * 4 + 4 * a)
    assert layer.act_bytes(b, s, 2) == 32 * s * b * h + stats
    # tensor parallel: s*b*h*(10 + 24/t) in Korthikanti, minus the 2 replicated mask bytes
    t = 4
    stats_tp = b * s * (2 * 2 * 4 + 4 * a // t)
    assert layer.act_bytes(b, s, 2, tp=t) == s * b * h * (8 + 24 // t) + stats_tp
    # full recomputation: only the layer input, 2*s*b*h
    assert layer.act_bytes(b, s, 2, checkpoint=True) == 2 * s * b * h
    # Megatron-SP divides everything (the column-parallel inputs are kept as sequence shards
    # and re-gathered in backward): Korthikanti's 34*s*b*h/t, without the 2 mask bytes
    msp = layer.act_bytes(b, s, 2, tp=t, sp_kind="megatron")
    assert msp == (32 * s * b * h + stats) // t
    # Ulysses divides everything, and o_proj keeps the all-to-all output (one more s*b*h/t)
    ulysses = layer.act_bytes(b, s, 2, sp=t, sp_kind="ulysses")
    assert ulysses == (layer.act_bytes(b, s, 2) + 2 * s * b * h) // t


def test_spec_flops_follow_narayanan():
    """24*b*s*h^2 + 4*b*s^2*h per GPT layer forward (Narayanan et al. 2021) for ffn = 4h."""
    layer = M.spec("gpt2-medium").layer(0)
    b, s, h = 2, 1024, 1024
    assert layer.flops_fwd(b, s) == 24 * b * s * h * h + 4 * b * s * s * h


def test_spec_model_flops_follow_kaplan_for_llama2_7b():
    """Forward FLOPs = 2 * (matmul parameters) per token + 4*s*h per token per layer for
    attention (Kaplan et al. 2020: C_fwd = 2N + 2 n_layer n_ctx d_attn, QK^T and AV)."""
    spec, s = M.spec("llama2-7b"), 4096
    h, layers, vocab = 4096, 32, 32000
    matmul = spec.param_count() - vocab * h - (2 * layers + 1) * h  # no lookup, no norms
    assert spec.flops_fwd(1, s) == 2 * s * matmul + layers * 4 * s * s * h


def test_spec_of_70b_needs_no_allocation_and_scales_with_tp():
    spec = M.spec("llama2-70b")
    layer = spec.layer(0)
    assert layer.num_kv_heads == 8 and layer.head_dim == 128
    full = layer.act_bytes(1, 4096, 2)
    assert layer.act_bytes(1, 4096, 2, tp=8) < full / 2
    assert layer.act_bytes(1, 4096, 2, checkpoint=True) == 2 * 4096 * 8192


def _shard_block(layer, tp: int):
    """Rank 0's Megatron shard of a pre-norm block: q/k/v and fc_in/gate/up column-split,
    o_proj and fc_out/down row-split."""
    for n in ("q_proj", "k_proj", "v_proj"):
        setattr(layer.attn, n, _shard_linear(getattr(layer.attn, n), tp, 0))
    layer.attn.o_proj = _shard_linear(layer.attn.o_proj, tp, 1)
    cols = ("fc_in",) if hasattr(layer.mlp, "fc_in") else ("gate_proj", "up_proj")
    for n in cols:
        setattr(layer.mlp, n, _shard_linear(getattr(layer.mlp, n), tp, 0))
    row = "fc_out" if hasattr(layer.mlp, "fc_out") else "down_proj"
    setattr(layer.mlp, row, _shard_linear(getattr(layer.mlp, row), tp, 1))


@pytest.mark.parametrize("checkpoint", ["none", "selective"])
@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug", "bert-debug"])
def test_spec_megatron_sp_activation_bytes_equal_a_simulated_rank(name, checkpoint, monkeypatch):
    """Rank 0 of tp=2 with Megatron-SP built by the runtime's own ``apply_tp`` (the
    collectives replaced by shape-equivalent local ops: all-gather = concat with other ranks'
    data, reduce-scatter = slice, one process): norms on s/2 tokens, column-parallel linears
    keeping only the sequence shard of their input (re-gathered in backward, as Megatron-LM);
    the backward runs and gives the gradient of the simulated rank."""
    import galvatron.parallel.tensor_parallel as TP
    from galvatron.models.spec import measure_kept_bytes

    tp, b, s = 2, 2, 16
    gathered, regathered = [], []

    def gather(t, group):
        gathered.append(t.shape)
        return torch.cat([t, torch.randn(t.shape).to(t.dtype)], dim=1)

    class _Done:
        def wait(self):
            return None

    def start(t, group):
        regathered.append(t.shape)
        return torch.cat([t, torch.randn(t.shape).to(t.dtype)], dim=1), _Done()

    monkeypatch.setattr(TP, "_gather_seq", gather)
    monkeypatch.setattr(TP, "_reduce_scatter_seq", lambda t, group: t[:, : t.shape[1] // tp])
    monkeypatch.setattr(TP, "_start_gather_seq", start)
    monkeypatch.setattr(TP, "_finish_gather_seq", lambda buf, t, group: buf)
    monkeypatch.setattr(TP.dist, "get_world_size", lambda group=None: tp)
    layer = M.build(name, seed=0).train().layers[0]
    TP.apply_tp(layer, tp, 0, None, seq_parallel=True)
    params = list(layer.parameters())
    x = torch.randn(b, s // tp, 64, requires_grad=True)
    spec = M.spec(name).layer(0)
    if checkpoint == "none":
        out, got = measure_saved_bytes(layer, M.Carry(x), exclude=params)
    else:
        out, got = measure_kept_bytes(_selective(layer), M.Carry(x), exclude=[*params, x])
        got += x.numel() * 4
        out = M.Carry(out[0])
    assert got == spec.act_bytes(b, s, 4, tp=tp, sp_kind="megatron", checkpoint=checkpoint)
    out.hidden.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in params)
    # each kept shard is gathered again once: q/k/v share one, fc_in (or gate and up) another
    assert regathered == [torch.Size([b, s // tp, 64])] * 2 and gathered


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_spec_ulysses_activation_bytes_equal_a_simulated_rank(name):
    """Rank 0 of Ulysses sp=2: the layer runs on s/2 tokens and ``attn.core`` is wrapped with
    (simulated) all-to-alls: full sequence and half the heads inside core."""
    sp, b, s = 2, 2, 16
    layer = M.build(name, seed=0).train().layers[0]
    core = layer.attn.core

    def ulysses_core(q, k, v, mask):
        def seq_to_heads(t):  # [b, s/sp, h, d] -> [b, s, h/sp, d]
            mine = t[:, :, : t.shape[2] // sp]
            return torch.cat([mine, torch.randn(mine.shape)], dim=1)
        out = core(seq_to_heads(q), seq_to_heads(k), seq_to_heads(v), mask)
        mine = out[:, : s // sp]  # heads -> sequence
        return torch.cat([mine, torch.randn(mine.shape)], dim=2)

    layer.attn.core = ulysses_core
    x = torch.randn(b, s // sp, 64, requires_grad=True)
    _, got = measure_saved_bytes(layer, M.Carry(x), exclude=list(layer.parameters()))
    assert got == M.spec(name).layer(0).act_bytes(b, s, 4, sp=sp, sp_kind="ulysses")


def _selective(layer):
    from torch.utils.checkpoint import checkpoint

    from galvatron.parallel.units import selective_context

    def streams(c):  # both streams: T5's last encoder layer swaps them
        out = layer(c)
        return out.hidden, out.memory

    def run(carry):
        return checkpoint(streams, carry, use_reentrant=False, context_fn=selective_context)
    return run


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("name", DEBUG)
def test_spec_selective_checkpoint_bytes_equal_measured_kept_tensors(name, backend):
    """Selective checkpointing (the runtime's policy) keeps the layer input and the outputs of
    the matmuls and of the fused attention kernel: measured as the storages created by the
    layer's forward that are still alive after it, plus the input the checkpoint holds; exact.
    Between none and full for every layer."""
    from galvatron.models.spec import measure_kept_bytes

    model = M.build(name, seed=0, attn_backend=backend).train()
    spec = M.spec(model.config)
    params = [*model.parameters(), *model.buffers()]
    for b, s, padded in SHAPES:
        inputs = debug_batch(name, b, s, padded)
        seq = spec.seq_len if spec.family in ("vit", "swin") else s
        carry = model.embed({k: v for k, v in inputs.items()})
        kw = dict(dtype_bytes=4, padded=padded, attn_math=backend == "math")
        for i, layer in enumerate(model.layers):
            carry = _leaf(carry)
            _, kept = measure_kept_bytes(_selective(layer), carry, exclude=[*params, carry.hidden])
            kept += carry.hidden.numel() * 4  # the input, held by the checkpoint
            ls = spec.layer(i)
            assert kept == ls.act_bytes(b, seq, checkpoint="selective", include_shared=False, **kw), (i, ls.name)
            assert ls.act_bytes(b, seq, checkpoint="full", **kw) <= ls.act_bytes(
                b, seq, checkpoint="selective", **kw) < ls.act_bytes(b, seq, **kw)
            carry = layer(carry)


def test_measure_kept_bytes_agrees_with_saved_tensor_hooks_without_checkpointing():
    """The two measurements agree on a plain layer: kept (new, alive) + the saved input."""
    from galvatron.models.spec import measure_kept_bytes

    layer = M.build("llama-debug", seed=0).train().layers[0]
    x = torch.randn(2, 16, 64, requires_grad=True)
    params = list(layer.parameters())
    _, saved = measure_saved_bytes(layer, M.Carry(x), exclude=params)
    _, kept = measure_kept_bytes(lambda c: layer(c).hidden, M.Carry(x), exclude=[*params, x])
    assert kept + x.numel() * 4 == saved


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_spec_activation_bytes_under_autocast_equal_measured(name):
    """Mixed precision in a DDP / ZeRO-1 unit (``autocast=True``), exact: fp32 parameters under
    CPU bf16 autocast with the runtime's float32 residual stream (the layer input, norm inputs
    and outputs and LayerNorm statistics in float32) and one bf16 cast of the norm output per
    linear reading it (q/k/v: 3, gate/up: 2). Autocast also caches a bf16 copy of every matmul
    weight (saved by the matmul): a parameter term of the cost model, subtracted here. ZeRO-2/3
    units run wholly in bf16 (FSDP2 casts their input): ``test_spec_activation_bytes_in_bf16_
    equal_measured``."""
    model = M.build(name, seed=0).train()
    spec = M.spec(model.config)
    b, s = 2, 16
    inputs = debug_batch(name, b, s)
    labels = debug_labels(name, inputs)
    params = [*model.parameters(), *model.buffers()]
    linears = [m for part in (*model.layers, model.head) for m in part.modules() if isinstance(m, torch.nn.Linear)]
    casts = [2 * m.weight.numel() for m in linears]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        carry = M.Carry(torch.randn(b, s, model.config.hidden_size, requires_grad=True))
        got = []
        for layer in model.layers:
            carry, n = measure_saved_bytes(layer, _leaf(carry), exclude=params)
            got.append(n)
        assert carry.hidden.dtype == torch.float32  # the stream stays fp32
        _, head = measure_saved_bytes(lambda: model.loss(model.head(_leaf(carry)), {"labels": labels}),
                                      exclude=params)
    kw = dict(dtype_bytes=2, autocast=True)
    predicted = [spec.layer(i).act_bytes(b, s, **kw) for i in range(len(got))] + [spec.head.act_bytes(b, s, **kw)]
    assert sum(got) + head - sum(casts) == sum(predicted)
    # per part: each layer's own weight casts
    n_layer = len(casts) - 1  # the head has one linear (its projection)
    per_layer = sum(casts[:n_layer]) // len(got)
    assert [g - per_layer for g in got] + [head - casts[-1]] == predicted
