"""Analytic model spec: parameters, forward FLOPs and activation bytes per layer type.

This is the input of the analytic cost model. For each layer type a :class:`LayerTypeSpec`
lists the tensors autograd saves for backward (:class:`SavedTensor`), each with its size as a
function of (batch, seq), its element type and how it is sharded. Activation bytes under any
(tp, sp kind, checkpointing) follow from that list; nothing is a fitted constant.

Sources:

- Activation bytes: Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
  Transformer Models" (arXiv:2205.05198), Sec. 4: a GPT layer in fp16 without flash attention
  saves ``s*b*h*34 + 5*a*s^2*b`` bytes; with tensor parallel ``s*b*h*(10 + 24/t) + 5*a*s^2*b/t``;
  with sequence parallel ``(34*s*b*h + 5*a*s^2*b)/t``; with full recomputation only the layer
  input ``2*s*b*h``.
- FLOPs: Kaplan et al. 2020 (``2*N`` per token for the matmuls) and Narayanan et al. 2021
  (``24*b*s*h^2 + 4*b*s^2*h`` per GPT layer forward: the matmuls plus ``QK^T`` and ``AV``).
  Attention is counted over the full ``s x s`` score matrix even when causal (as Narayanan);
  element-wise ops, norms and softmax are not counted.

What we model (and what differs from Korthikanti): our layers run attention through
``scaled_dot_product_attention``. On CPU (the flash-for-CPU kernel) it saves q, k, v, the
output and a float32 log-sum-exp per head and token -- no ``s^2`` term; CUDA flash/efficient
kernels keep the same set plus a few bytes of RNG state (not measured here: no GPU). Where the
attention bias is trainable (T5, Swin) CPU SDPA falls back to its math path and keeps the
softmax output (``a*s^2*b``, Swin: per window) instead; a CUDA efficient kernel would keep the
bias instead -- not modelled. We count exactly the tensors our modules save, element by
element (``test_models_spec.py`` measures every debug model with ``saved_tensors_hooks``:
0 bytes error): e.g. a GPT-2 layer saves 16 ``s*b*h``-sized tensors (no dropout: our flavours
train with dropout 0, so Korthikanti's 2 mask bytes per element are absent; with dropout > 0
the masks are not modelled), plus float32 norm statistics and log-sum-exp. ``attn_math=True``
in :meth:`LayerTypeSpec.act_bytes` models the explicit-softmax path (``AttnBackend.MATH``).
Masks: causal models are modelled without padding unless ``padded=True`` (SDPA then keeps a
float copy of the ``[b, 1, s, s]`` mask: an ``s^2`` term per layer).

Sharding (``tp`` = Megatron tensor parallel): q/k/v, attention output, MLP hidden tensors and
the log-sum-exp are split over heads/columns (``Shard.TP``). Norm inputs/outputs are replicated
under plain tp; with Megatron-SP the norm side is sequence-split (``Shard.SEQ``), and so is
the input a column-parallel linear keeps: our runtime, like Megatron-LM, saves the sequence
shard of the all-gathered input and gathers it again in backward (Korthikanti's ``34/t``;
torch DTensor's ``SequenceParallel`` would keep the gathered input). ``Shard.GATHERED`` (not
divided by tp) is left for the full-width partial sums of row-parallel matmuls that selective
checkpointing keeps. Ulysses (``sp``): every tensor is
split by ``sp`` (sequence outside attention, heads inside), and with flash-style attention
o_proj keeps the all-to-all output besides SDPA's own output (one more ``b*s*a*d/sp``).
Megatron-SP and Ulysses are checked against simulated ranks in ``test_models_spec.py``
(collectives replaced by shape-equivalent local ops). Checkpointing keeps only the layer
input (``input_per_token`` elements per token, split like ``Shard.SEQ``); the recomputation
peak of one layer is the cost model's business.

Vision models: ``seq`` is the number of tokens entering the first layer (ViT: patches + 1;
Swin: patches); a layer working on fewer tokens has ``token_div`` > 1 (Swin stage i: 4**i).
T5: encoder and decoder sequences both have length ``seq``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from galvatron.models.layers import Activation
from galvatron.plan import Checkpoint, SpKind


class Elem(str, enum.Enum):
    """Element type of a saved tensor."""

    ACT = "act"  # the activation dtype: dtype_bytes
    FP32 = "fp32"  # statistics kept in float32 (norm mean/rstd, log-sum-exp)
    INT64 = "int64"  # indices (embedding lookups, labels, T5 position buckets)
    LN_STATS = "ln_stats"  # LayerNorm mean/rstd: float32 on CUDA, the input dtype on CPU
    # the residual stream's dtype (norm inputs and outputs): the activation dtype, but float32
    # under autocast (mixed precision: fp32 master weights, the stream stays fp32)
    STREAM = "stream"


class Shard(str, enum.Enum):
    """How a saved tensor is split under tensor parallelism (see module docstring)."""

    TP = "tp"
    SEQ = "seq"
    GATHERED = "gathered"
    NONE = "none"


def _elem_bytes(elem: Elem, dtype_bytes: int, ln_stats_bytes: int, stream_bytes: int | None = None) -> int:
    return {Elem.ACT: dtype_bytes, Elem.FP32: 4, Elem.INT64: 8, Elem.LN_STATS: ln_stats_bytes,
            Elem.STREAM: dtype_bytes if stream_bytes is None else stream_bytes}[elem]


@dataclass(frozen=True)
class SavedTensor:
    """One tensor saved for backward: ``per_token*b*s + per_token_seq*b*s*s + per_sample*b +
    per_seq*s + per_seq_seq*s*s + fixed`` elements (``s`` = tokens of this layer)."""

    name: str
    per_token: int = 0
    per_token_seq: int = 0
    per_sample: int = 0
    per_seq: int = 0
    per_seq_seq: int = 0
    fixed: int = 0
    elem: Elem = Elem.ACT
    shard: Shard = Shard.TP
    sp_split: bool = True  # divided by the Ulysses degree
    padded_only: bool = False  # only present when a padding mask is given
    unpadded_only: bool = False  # only present without a padding mask
    shared: bool = False  # one storage for every layer of this type on a stage (T5 memory)
    ulysses_only: bool = False  # only present under Ulysses (the all-to-all output copy)
    flash_only: bool = False  # only on the fused-attention path (not with ``attn_math``)
    # linears reading this (column-parallel) input: under autocast each casts the float32
    # stream-side tensor itself and keeps its own copy (Megatron-SP's linear keeps one)
    readers: int = 1

    def elements(self, batch: int, seq: int) -> int:
        return (self.per_token * batch * seq + self.per_token_seq * batch * seq * seq
                + self.per_sample * batch
                + self.per_seq * seq + self.per_seq_seq * seq * seq + self.fixed)


@dataclass(frozen=True)
class LayerTypeSpec:
    """Spec of one layer type (or of the embedding / head part).

    ``matmul_params``: weight elements multiplied per token (2 FLOPs each). ``attn_ops``:
    number of attention products per layer (T5 decoder: self + cross = 2); ``attn_span``:
    keys per query (None = the whole sequence; Swin: window tokens).
    """

    name: str
    param_count: int
    hidden_size: int
    num_heads: int = 0
    num_kv_heads: int = 0
    head_dim: int = 0
    ffn_hidden: int = 0
    matmul_params: int = 0
    attn_ops: int = 0
    attn_span: int | None = None
    token_div: int = 1
    input_per_token: int = 0
    saved: tuple[SavedTensor, ...] = ()
    saved_math: tuple[SavedTensor, ...] | None = field(default=None, repr=False)
    kept_selective: tuple[SavedTensor, ...] = field(default=(), repr=False)

    def tokens(self, seq: int) -> int:
        return seq // self.token_div

    def flops_fwd(self, batch: int, seq: int) -> int:
        """Forward FLOPs (multiply-add = 2) for ``batch`` sequences of ``seq`` tokens."""
        s = self.tokens(seq)
        span = s if self.attn_span is None else self.attn_span
        attn = 4 * batch * s * span * self.num_heads * self.head_dim * self.attn_ops
        return 2 * batch * s * self.matmul_params + attn

    def selective_recompute_flops(self, batch: int, seq: int) -> int:
        """Counted forward FLOPs that selective checkpointing recomputes: the attention products
        of the attention ops that do not run the fused kernel (whose output is not kept, see
        :func:`attn_kept_selective`). The matmuls' outputs are kept; element-wise ops, norms
        and softmax are not counted (as in :meth:`flops_fwd`)."""
        if not self.attn_ops:
            return 0
        fused = sum(1 for t in self.kept_selective if t.flash_only and t.name.endswith(".core.out"))
        s = self.tokens(seq)
        span = s if self.attn_span is None else self.attn_span
        return 4 * batch * s * span * self.num_heads * self.head_dim * max(0, self.attn_ops - fused)

    def act_bytes(
        self,
        batch: int,
        seq: int,
        dtype_bytes: int = 2,
        tp: int = 1,
        sp: int = 1,
        sp_kind: SpKind | str = SpKind.NONE,
        checkpoint: Checkpoint | str | bool = False,
        padded: bool = False,
        attn_math: bool = False,
        include_shared: bool = True,
        ln_stats_bytes: int = 4,
        autocast: bool = False,
    ) -> int:
        """Bytes saved for backward by one layer on one device, for a micro-batch of
        ``batch`` sequences of ``seq`` tokens. ``padded``: a padding mask is given.
        ``attn_math``: the explicit-softmax attention path (``saved_math``, when the layer has
        attention; see module docstring). ``include_shared=False`` leaves out tensors that
        are one storage for all layers of the type on a stage (``SavedTensor.shared``; count
        them once per stage); they are kept under checkpointing too. ``ln_stats_bytes``: bytes
        of a LayerNorm mean/rstd element (4 on CUDA; on CPU the activation dtype's).
        ``checkpoint``: none / selective / full (``True`` = full): full keeps the layer input,
        selective the input and ``kept_selective`` (matmul and fused-attention outputs).
        ``autocast``: mixed precision (fp32 master weights, ``dtype_bytes`` the autocast dtype):
        the residual stream and the norms stay float32 (``Elem.STREAM``, the checkpointed input,
        LayerNorm statistics), and every linear that reads a stream-side tensor keeps its own
        cast of it (``SavedTensor.readers``; one under Megatron-SP)."""
        sp_kind = SpKind(sp_kind)
        ckpt = Checkpoint.FULL if checkpoint is True else Checkpoint.NONE if checkpoint is False \
            else Checkpoint(checkpoint)
        msp = sp_kind is SpKind.MEGATRON
        usp = sp if sp_kind is SpKind.ULYSSES else 1
        s = self.tokens(seq)
        tensors = self.saved_math if attn_math and self.saved_math is not None else self.saved
        stream = 4 if autocast else dtype_bytes
        if autocast:
            ln_stats_bytes = 4
        total = 0.0
        if ckpt is not Checkpoint.NONE:
            total = self.input_per_token * batch * s * stream / ((tp if msp else 1) * usp)
            kept = self.kept_selective if ckpt is Checkpoint.SELECTIVE else ()
            tensors = tuple(t for t in tensors if t.shared) + kept
        for t in tensors:
            if (t.padded_only and not padded) or (t.unpadded_only and padded):
                continue
            if t.flash_only and attn_math:
                continue
            if (t.shared and not include_shared) or (t.ulysses_only and usp == 1):
                continue
            div = usp if t.sp_split else 1
            if t.shard is Shard.TP or (t.shard is Shard.SEQ and msp):
                div *= tp
            copies = t.readers if autocast and not msp else 1
            total += copies * t.elements(batch, s) * _elem_bytes(t.elem, dtype_bytes, ln_stats_bytes, stream) / div
        return int(-(-total // 1))


@dataclass(frozen=True)
class ModelSpec:
    """Everything the cost model needs to know about one model.

    ``layer_types[i]`` names the type of layer ``i`` (a key of ``layer_specs``). ``embed`` and
    ``head`` are the input part and the output part; ``head`` includes the loss (the float32
    log-softmax that cross-entropy saves). ``tied_param_count`` parameters are counted more than
    once in the parts (tied embeddings in ``embed`` and ``head``; T5's per-stack relative-bias
    table in every layer of the stack): a pipeline stage holding a part holds its own copy.
    """

    name: str
    family: str
    embed: LayerTypeSpec
    head: LayerTypeSpec
    layer_specs: dict[str, LayerTypeSpec]
    layer_types: tuple[str, ...]
    seq_len: int
    tied_param_count: int = 0

    @property
    def num_layers(self) -> int:
        return len(self.layer_types)

    def layer(self, i: int) -> LayerTypeSpec:
        return self.layer_specs[self.layer_types[i]]

    def param_count(self) -> int:
        """Unique parameters of the whole model (tied ones once)."""
        layers = sum(self.layer(i).param_count for i in range(self.num_layers))
        return self.embed.param_count + layers + self.head.param_count - self.tied_param_count

    def flops_fwd(self, batch: int, seq: int | None = None) -> int:
        seq = self.seq_len if seq is None else seq
        parts = [self.embed, self.head] + [self.layer(i) for i in range(self.num_layers)]
        return sum(p.flops_fwd(batch, seq) for p in parts)


# ---------------------------------------------------------------------------- builders
# Small helpers the family files compose their saved-tensor lists from.


def norm_saved(prefix: str, hidden: int, rms: bool) -> list[SavedTensor]:
    """LayerNorm saves its input and its mean and rstd (``Elem.LN_STATS``: float32 on CUDA, the
    input dtype on CPU). Our RMSNorm (``layers.RMSNorm``) saves its input cast to float32, the
    float32 rstd and the normalised tensor."""
    if rms:
        return [SavedTensor(f"{prefix}.input_fp32", per_token=hidden, elem=Elem.FP32,
                            shard=Shard.SEQ),
                SavedTensor(f"{prefix}.rstd", per_token=1, elem=Elem.FP32, shard=Shard.SEQ),
                SavedTensor(f"{prefix}.normed", per_token=hidden, elem=Elem.STREAM, shard=Shard.SEQ)]
    return [SavedTensor(f"{prefix}.input", per_token=hidden, elem=Elem.STREAM, shard=Shard.SEQ),
            SavedTensor(f"{prefix}.stats", per_token=2, elem=Elem.LN_STATS, shard=Shard.SEQ)]


def loss_saved(classes: int, per_sample: bool = False) -> list[SavedTensor]:
    """Cross-entropy over ``classes`` logits: the float32 log-softmax (split over tp: vocab
    parallel), the int64 labels and a float32 scalar. Per token (LMs) or per sample
    (classifiers, ``per_sample``; not split)."""
    if per_sample:
        return [SavedTensor("loss.log_softmax", per_sample=classes, elem=Elem.FP32,
                            shard=Shard.NONE),
                SavedTensor("loss.labels", per_sample=1, elem=Elem.INT64, shard=Shard.NONE),
                SavedTensor("loss.total_weight", fixed=1, elem=Elem.FP32, shard=Shard.NONE)]
    return [SavedTensor("loss.log_softmax", per_token=classes, elem=Elem.FP32),
            SavedTensor("loss.labels", per_token=1, elem=Elem.INT64, shard=Shard.NONE),
            SavedTensor("loss.total_weight", fixed=1, elem=Elem.FP32, shard=Shard.NONE)]


def linear_input_saved(name: str, width: int, column_parallel: bool = True, readers: int = 1) -> SavedTensor:
    """The input a linear keeps for its weight gradient. Input of a column-parallel linear
    (q/k/v, fc_in): replicated under plain tp, its sequence shard under Megatron-SP
    (``Shard.SEQ``: re-gathered in backward); of a row-parallel one: ``Shard.TP``.
    ``readers``: linears reading the same (norm output) input, each keeping its own autocast
    cast of it under mixed precision (q/k/v: 3; gate/up: 2)."""
    return SavedTensor(name, per_token=width, shard=Shard.SEQ if column_parallel else Shard.TP,
                       readers=readers)


def sdpa_saved(prefix: str, heads: int, kv_heads: int, head_dim: int, rope: bool = False,
               span: int | None = None, fp32: bool = False,
               ) -> tuple[list[SavedTensor], list[SavedTensor]]:
    """What attention saves. Returns (flash-style list, math list).

    Flash-style SDPA kernels (the CPU default without a trainable bias): q, k, v, the output
    and a float32 log-sum-exp. The output is also the o_proj input (the CPU kernel returns it
    in ``[b, s, h, d]`` memory order, so the reshape is a view).

    Math path (``AttnBackend.MATH``, and what SDPA itself falls back to on CPU when the
    attention bias requires grad -- T5, Swin): q, k, v, the softmax output ``heads*s*s*b``
    (``heads*span`` per token with windows of ``span`` keys), and a copy of the output for
    o_proj; GQA k/v are repeated there (counted as ``kv_repeat``). No log-sum-exp, and the
    additive mask/bias is not kept. ``fp32``: SDPA's own CPU fallback, which computes (and
    keeps) q, k, v and the softmax output in float32 for bf16/fp16 inputs.
    """
    qkv = Elem.FP32 if fp32 else Elem.ACT
    common = [
        SavedTensor(f"{prefix}.q", per_token=heads * head_dim, elem=qkv),
        SavedTensor(f"{prefix}.k", per_token=kv_heads * head_dim, elem=qkv),
        SavedTensor(f"{prefix}.v", per_token=kv_heads * head_dim, elem=qkv),
        SavedTensor(f"{prefix}.out", per_token=heads * head_dim),
    ]
    if rope:
        common.append(SavedTensor(f"{prefix}.rope_cos_sin", per_seq=2 * head_dim,
                                  shard=Shard.NONE, sp_split=False))
    sdpa = common + [
        SavedTensor(f"{prefix}.lse", per_token=heads, elem=Elem.FP32),
        # under Ulysses o_proj keeps the all-to-all output, a second copy of the output
        SavedTensor(f"{prefix}.out_a2a", per_token=heads * head_dim, ulysses_only=True),
    ]
    probs = (SavedTensor(f"{prefix}.probs", per_token_seq=heads, elem=qkv) if span is None
             else SavedTensor(f"{prefix}.probs", per_token=heads * span, elem=qkv))
    math = common + [probs]
    if kv_heads != heads:
        math.append(SavedTensor(f"{prefix}.kv_repeat", per_token=2 * (heads - kv_heads) * head_dim))
    return sdpa, math


def attn_kept_selective(prefix: str, hidden: int, heads: int, kv_heads: int, head_dim: int,
                        fused: bool) -> list[SavedTensor]:
    """What selective checkpointing keeps of an attention block: the q/k/v projection outputs
    (column-parallel, ``Shard.TP``), the o_proj matmul output (the full-width partial sum before
    the tp reduction, ``Shard.GATHERED``) and, when the fused kernel runs (``fused``: no
    trainable bias), its output and float32 log-sum-exp (``flash_only``: the math path's bmm
    and softmax are recomputed)."""
    q, kv = heads * head_dim, kv_heads * head_dim
    out = [SavedTensor(f"{prefix}.q_proj.out", per_token=q),
           SavedTensor(f"{prefix}.k_proj.out", per_token=kv),
           SavedTensor(f"{prefix}.v_proj.out", per_token=kv),
           SavedTensor(f"{prefix}.o_proj.out", per_token=hidden, shard=Shard.GATHERED)]
    if fused:
        out += [SavedTensor(f"{prefix}.core.out", per_token=q, flash_only=True),
                SavedTensor(f"{prefix}.core.lse", per_token=heads, elem=Elem.FP32, flash_only=True)]
    return out


def mlp_kept_selective(prefix: str, hidden: int, columns: tuple[int, ...]) -> list[SavedTensor]:
    """What selective checkpointing keeps of an MLP: the outputs of its column-parallel
    matmuls (fc_in, or gate and up) and of the row-parallel one (full width)."""
    return ([SavedTensor(f"{prefix}.col{i}.out", per_token=w) for i, w in enumerate(columns)]
            + [SavedTensor(f"{prefix}.row.out", per_token=hidden, shard=Shard.GATHERED)])


# ---------------------------------------------------------------------------- shared layer specs
# Specs of the layers several families share (``layers.PreNormBlock``, ``layers.LMHead``,
# ``layers.MLP``, a classification head); each family's own spec is in its file.


def lm_head_spec(name: str, h: int, vocab: int, params: int, rms: bool) -> LayerTypeSpec:
    """``layers.LMHead`` (final norm + vocabulary projection) + the loss (float32 log-softmax of
    the logits, int64 labels): ``h`` hidden size, ``vocab`` classes, ``params`` its parameter
    count, ``rms``: RMSNorm instead of LayerNorm."""
    saved = norm_saved("norm", h, rms) + [
        linear_input_saved("lm_head.input", h),
        *loss_saved(vocab),
    ]
    return LayerTypeSpec(name, params, h, matmul_params=vocab * h, saved=tuple(saved))


def prenorm_layer_spec(name: str, c: Any, ffn_saved: list[SavedTensor], params: int,
                       matmul: int, rms: bool, rope: bool, kv_heads: int, head_dim: int,
                       mask_always: bool = False, padding: bool = True,
                       ffn_columns: tuple[int, ...] | None = None) -> LayerTypeSpec:
    """A pre-norm block (``layers.PreNormBlock``: GPT-2, LLaMA, ViT): norm1, attention, norm2,
    MLP. ``c``: the family config (``hidden_size``, ``num_heads``, ``ffn_hidden``);
    ``ffn_saved``: what the MLP saves; ``params`` / ``matmul``: parameter count and matmul
    weight elements of the block; ``rms``: RMSNorm instead of LayerNorm; ``rope``: RoPE inside
    attention; ``kv_heads`` / ``head_dim``: attention shape; ``mask_always``: a sliding-window
    mask is built even without padding; ``padding``: the model takes a padding mask at all
    (ViT does not); ``ffn_columns``: output widths of the MLP's column-parallel linears
    (default: one of ``ffn_hidden``)."""
    h, a, d = c.hidden_size, c.num_heads, head_dim
    sdpa, math = sdpa_saved("attn", a, kv_heads, d, rope=rope)
    # causal + padding builds a [b, 1, s, s] mask (a sliding window a [1, 1, s, s] one, or
    # [b, 1, s, s] with padding); SDPA keeps a float copy of it. Not split by Ulysses: the
    # all-to-all happens before core, which sees the full sequence.
    mask = [SavedTensor("attn.mask", per_token_seq=1, shard=Shard.NONE, sp_split=False,
                        padded_only=True)] if padding else []
    if mask_always:
        mask.append(SavedTensor("attn.window_mask", per_seq_seq=1, shard=Shard.NONE,
                                sp_split=False, unpadded_only=True))
    pre = norm_saved("norm1", h, rms) + [linear_input_saved("attn.input", h, readers=3)]
    post = norm_saved("norm2", h, rms) + ffn_saved
    return LayerTypeSpec(
        name, params, h, a, kv_heads, d, c.ffn_hidden, matmul_params=matmul, attn_ops=1,
        input_per_token=h, saved=tuple(pre + sdpa + mask + post),
        saved_math=tuple(pre + math + post),  # the math path adds the mask: nothing saved
        kept_selective=tuple(attn_kept_selective("attn", h, a, kv_heads, d, fused=True)
                             + mlp_kept_selective("mlp", h, ffn_columns or (c.ffn_hidden,))),
    )


def gelu_mlp_saved(h: int, f: int, act: Activation = Activation.GELU) -> list[SavedTensor]:
    """``fc_out(act(fc_in(x)))``: GELU / SiLU keep their input; ReLU / tanh keep their output,
    which is fc_out's input (one storage); quick GELU keeps its input and the sigmoid."""
    saved = [linear_input_saved("mlp.fc_in.input", h)]
    if act not in (Activation.RELU, Activation.TANH):
        saved.append(SavedTensor("mlp.act.input", per_token=f))
    if act is Activation.QUICK_GELU:
        saved.append(SavedTensor("mlp.act.sigmoid", per_token=f))
    return saved + [linear_input_saved("mlp.fc_out.input", f, column_parallel=False)]


def cls_head_saved(h: int, labels: int) -> tuple[SavedTensor, ...]:
    """Classification head + loss: per-sample tensors (independent of the sequence). The
    norm keeps a view of the last hidden states, i.e. their whole storage (per token)."""
    return (SavedTensor("norm.input_storage", per_token=h, shard=Shard.SEQ),
            SavedTensor("norm.stats", per_sample=2, elem=Elem.LN_STATS, shard=Shard.NONE),
            SavedTensor("classifier.input", per_sample=h, shard=Shard.NONE),
            *loss_saved(labels, per_sample=True))


# ---------------------------------------------------------------------------- measurement
# What the specs are tested against (``test_models_spec.py``).


def measure_kept_bytes(fn, *args, exclude=(), **kwargs):  # noqa: ANN001, ANN201 - any callable
    """Run ``fn(*args, **kwargs)`` and return ``(output, bytes)``: the bytes of the unique
    storages created (or viewed) during the call that are still alive after it, outside
    ``exclude`` (pass the parameters and the inputs) and the output. Unlike :func:`measure_saved_bytes` this sees what checkpointing keeps (selective
    checkpointing caches op outputs outside autograd's saved tensors)."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class _Track(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.refs: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            self.refs += [weakref.ref(t.untyped_storage()) for t in tree_leaves(out)
                          if isinstance(t, torch.Tensor)]
            return out

    track = _Track()
    with track:
        out = fn(*args, **kwargs)
    skip = {t.untyped_storage().data_ptr() for t in (*exclude, *tree_leaves(out))
            if isinstance(t, torch.Tensor)}
    seen: dict[int, int] = {}
    for ref in track.refs:
        st = ref()
        if st is not None and st.data_ptr() not in skip and st.nbytes() > 0:
            seen[st.data_ptr()] = st.nbytes()
    return out, sum(seen.values())


def measure_saved_bytes(fn, *args, exclude=(), **kwargs):  # noqa: ANN001, ANN201 - any callable
    """Run ``fn(*args, **kwargs)`` and return ``(output, bytes)``: the bytes of the unique
    storages autograd saves for backward, leaving out those of ``exclude`` tensors (pass the
    parameters). This is the measurement the spec is tested against."""
    import torch

    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t):  # noqa: ANN001, ANN202
        st = t.untyped_storage()
        if st.data_ptr() not in skip and st.nbytes() > 0:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*args, **kwargs)
    return out, sum(seen.values())
