"""The runtime trains like a single process: every plan of ``cases.py`` gives the same
per-step losses (3 AdamW steps, clipping active) and final parameters as plain training of
the same model on the same data (fp32). One launch per world size runs many plans."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.distributed import cases as C
from tests.distributed.equivalence import (
    BETAS,
    EPS,
    LR,
    WD,
    build_case,
    compare,
    describe,
    make_batches,
    reference,
    reference_low_precision_params,
    run_case,
    train,
    within,
)
from tests.distributed.harness import launch

# Bounds: derived per case from fp32 rounding, the terms summed and Adam (tolerance.py).
STEPS, SEQ, CLIP = 3, 16, 1.0


def _refs(layers: int, gbs: int, padding: bool = False):
    out = {}
    for m in C.MODELS:
        ov = {"num_layers": 2 if m == C.T5 else layers}  # T5: per stack (4 layers)
        dec = SEQ // 2 if m == C.T5 else None  # T5: a decoder shorter than the encoder
        b = make_batches(m, gbs, SEQ, STEPS, padding=padding, decoder_seq=dec)
        out[m] = (b, reference(m, b, max_grad_norm=CLIP, overrides=ov), ov)
    return out


def _work(rank, world, cases, refs, corrupt=None):
    res = []
    for key, m, plan in cases:
        b, ref, ov = refs[m]
        r = run_case(m, plan, b, ref, max_grad_norm=CLIP, overrides=ov, corrupt=corrupt)
        res.append((key, r))
    return res


def _check(results, refs, cases):
    failures = []
    for i, (key, m, _) in enumerate(cases):
        covered = set()
        for rank_res in results:
            k, r = rank_res[i]
            assert k == key
            covered.update(r["names"])
            if not within(r):
                failures.append(f"{key}: {describe(r)}")
        missing = set(refs[m][1][1]) - covered
        if missing:
            failures.append(f"{key}: parameters on no rank: {sorted(missing)}")
    assert not failures, "\n".join(failures)


def test_every_technique_alone_matches_single_process_on_2_ranks():
    cases = C.world2()
    refs = _refs(2, 4)
    _check(launch(2, _work, cases, refs), refs, cases)


def test_interleaved_and_mixed_layerwise_plans_match_single_process_on_4_ranks():
    cases = C.world4()
    refs = _refs(4, 8)
    _check(launch(4, _work, cases, refs), refs, cases)


def test_padded_batches_with_attention_mask_match_single_process_on_4_ranks():
    """Padding mask + ignored labels: token counts differ per sample and per rank."""
    cases = C.world4()
    refs = _refs(4, 8, padding=True)
    b, _, ov = refs["gpt2-debug"]
    unmasked = [{"input_ids": x["input_ids"], "labels": x["labels"]} for x in b]
    assert abs(reference("gpt2-debug", unmasked, overrides=ov)[0][0]
               - reference("gpt2-debug", b, overrides=ov)[0][0]) > 1e-4  # the mask matters
    _check(launch(4, _work, cases, refs), refs, cases)


def test_pp2_tp2_dp2_mixed_plan_matches_single_process_on_8_ranks():
    cases = C.world8()
    refs = _refs(4, 8)
    _check(launch(8, _work, cases, refs), refs, cases)


def _skip_a_sync(pm):
    """Layer-shared parameters (T5): no all-reduce of their gradients; else no DDP sync."""
    shared = [u for u in pm.units if u.replicated]
    for u in shared:
        u.weight_group = None
    for u in pm.units if not shared else []:
        if u.ddp is not None:
            u.ddp.group = None  # DDP: no gradient all-reduce


def test_a_missing_gradient_sync_is_detected():
    cases = [c for c in C.world2() if c[0] in ("dp/gpt2-debug", "t5_mixed/t5")]
    refs = _refs(2, 4)
    results = launch(2, _work, cases, refs, _skip_a_sync)
    with pytest.raises(AssertionError, match="loss/grad-norm err"):
        _check([r[:1] for r in results], refs, cases[:1])
    # the shared relative-bias tables' gradients are only partial sums without their sync
    with pytest.raises(AssertionError, match=r"t5_mixed/t5: .*\(layers\.\d\.attn\.rel_bias"):
        _check([r[1:] for r in results], refs, cases[1:])


def _fail_on_rank1(rank, world):
    from galvatron import parallel

    plan = C.uniform(2, 2, 4, tp=2)
    pm = parallel.build("gpt2-debug", plan, seed=0, seq_len=16)
    ids = torch.zeros(4, 16 if rank == 0 else 8, dtype=torch.long)
    pm.train_step({"input_ids": ids})


def _fault_child(rank, path):
    import datetime

    import torch.distributed as dist

    from galvatron.parallel import fail_fast

    with fail_fast(exit_code=3 + rank):
        dist.init_process_group("gloo", store=dist.FileStore(path, 2), rank=rank, world_size=2,
                                timeout=datetime.timedelta(seconds=120))
        _fail_on_rank1(rank, 2)


def test_an_error_on_one_rank_ends_every_rank_promptly_with_that_error():
    """Rank 1 raises before a collective rank 0 is already blocked in; with ``fail_fast``
    both processes exit by themselves (rank 1 with its error) long before the 120 s timeout."""
    import os
    import tempfile
    import time

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_fault_child, args=(r, os.path.join(d, "s"))) for r in (0, 1)]
        t = time.time()
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        alive = [p.is_alive() for p in procs]
        for p in procs:
            if p.is_alive():
                p.kill()
        assert not any(alive), "a rank hung after its peer failed"
        assert time.time() - t < 45  # vs the 120 s collective timeout; slack for a loaded box
        assert [p.exitcode for p in procs] == [3, 4]  # both ended through fail_fast


def test_the_first_error_is_reported_with_its_message():
    with pytest.raises(RuntimeError, match="input_ids: expected shape"):
        launch(2, _fail_on_rank1, timeout_s=60)


def _bf16_work(rank, world, cases, refs):
    b, ref, ov = refs["gpt2-debug"]
    return [(k, run_case("gpt2-debug", p, b, ref, max_grad_norm=CLIP, overrides=ov)["loss_err"])
            for k, p in cases]


def test_bf16_autocast_plans_train_close_to_fp32():
    from galvatron.plan import Plan

    cases = [(n, Plan.uniform(2, 2, global_batch_size=4, precision="bf16", **kw)) for n, kw in
             [("tp", dict(tp=2)), ("zero3", dict(dp_type="zero3")), ("ulysses", dict(sp=2)),
              ("pp", dict(pp=2, num_microbatches=2))]]
    for k, err in launch(2, _bf16_work, cases, _refs(2, 4))[0]:
        assert 0 < err < 1e-2, (k, err)  # nonzero: bf16 really computed


def _mixed_precision_work(rank, world, cases, refs):
    out = []
    for k, p in cases:
        b, ref_cast, ref_autocast = refs
        pm = build_case("gpt2-debug", p, b, max_grad_norm=CLIP)
        seen: dict[str, set] = {}  # unit -> dtypes of its parameters while its forward runs

        def record(module, name, seen=seen):
            seen.setdefault(name, set()).update(q.dtype for q in module.parameters())

        for u in pm.units:
            if isinstance(u.module, torch.nn.Module):  # after FSDP2's own pre-forward hook
                u.module.register_forward_pre_hook(lambda m, a, n=u.name: record(m, n))
        losses, norms = train(pm, b)
        masters = {t.dtype for _, t, _ in pm.local_parameters()}
        states = {v.dtype for o in pm.optimizer.optimizers for st in o.state.values()
                  for n, v in st.items() if n != "step"}
        forward = {n: ("fsdp" if u.fsdp else "other", seen.get(n)) for u in pm.units for n in [u.name]}
        out.append((k, compare(pm, losses, norms, ref_cast)["loss_err"],
                    compare(pm, losses, norms, ref_autocast)["loss_err"], masters, states, forward))
    return out


def test_bf16_zero2_zero3_gather_bf16_and_match_single_process_bf16_training():
    """bf16 plans: ZeRO-2/3 units gather bf16 copies of fp32 master weights (FSDP2
    MixedPrecisionPolicy, fp32 reduce-scatter), DDP units autocast their fp32 weights. Each run
    is compared with single-process bf16 training of the same kind: bf16 weight copies for
    ZeRO-2/3, autocast on fp32 weights for DDP. The runs differ from their reference only in
    bf16 rounding that depends on how the batch is split (per-rank bf16 gradients summed in
    fp32 vs one bf16 gradient; GEMM accumulation order), so the per-step loss and gradient norm
    agree within one bf16 unit roundoff u = 2^-8 (measured 3e-4..8e-4). The loss cannot tell
    the two kinds apart (autocast casts the matmul weights to bf16 either way: 3.4e-4 from the
    other reference), so the parameters a unit computes with are checked directly: bf16 inside
    every ZeRO-2/3 unit's forward, fp32 elsewhere. Master weights and AdamW states stay fp32."""
    from galvatron.plan import LayerStrategy, Plan

    b = make_batches("gpt2-debug", 4, SEQ, STEPS)
    refs = (b, reference_low_precision_params("gpt2-debug", b, max_grad_norm=CLIP),
            reference_low_precision_params("gpt2-debug", b, max_grad_norm=CLIP, cast_params=False))
    u = 2.0 ** -8
    cases = [(n, Plan.uniform(2, 2, global_batch_size=4, precision="bf16", **kw)) for n, kw in
             [("zero3", dict(dp_type="zero3")), ("zero2", dict(dp_type="zero2")),
              ("zero3_layers_ddp_embedding", dict(dp_type="zero3", embedding=LayerStrategy())),
              ("ddp", dict()), ("zero1", dict(dp_type="zero1")),
              # Megatron-SP's shard-saving linears under autocast (bf16 shard, cast-back grads)
              ("megatron_sp", dict(tp=2, sp_kind="megatron"))]]
    for k, err_cast, err_autocast, masters, states, forward in launch(
            2, _mixed_precision_work, cases, refs)[0]:
        assert masters == {torch.float32} and states == {torch.float32}, (k, masters, states)
        for unit, (kind, dtypes) in forward.items():
            if dtypes is not None:
                want = torch.bfloat16 if kind == "fsdp" else torch.float32
                assert dtypes == {want}, (k, unit, kind, dtypes)
        assert sum(kind == "fsdp" for kind, _ in forward.values()) == (
            0 if k in ("ddp", "zero1", "megatron_sp") else 2 if k == "zero3_layers_ddp_embedding"
            else 3), (k, forward)
        fsdp = k.startswith("zero2") or k.startswith("zero3")
        if k == "zero3_layers_ddp_embedding":  # bf16 layer copies, fp32 embedding/head
            assert err_cast < u and err_autocast < u, (k, err_cast, err_autocast)
            continue
        assert (err_cast if fsdp else err_autocast) < u, (k, err_cast, err_autocast)


def _vit_work(rank, world, cases, batches, ref):
    return [(k, run_case("vit-debug", p, batches, ref, max_grad_norm=CLIP, seq_len=17))
            for k, p in cases]


def test_vit_classification_mixed_plans_match_single_process_on_4_ranks():
    """A per-sample loss (no vocabulary): sequence of 17 (cls + 16 patches), tp/dp/ZeRO/
    checkpointing and a pipeline; the embedding and head stay data parallel."""
    import torch

    from galvatron.plan import LayerStrategy as S

    g = torch.Generator().manual_seed(3)
    batches = [{"pixel_values": torch.randn(8, 3, 32, 32, generator=g),
                "labels": torch.randint(0, 10, (8,), generator=g)} for _ in range(STEPS)]
    ref = reference("vit-debug", batches, max_grad_norm=CLIP)
    cases = [
        ("vit_mixed", C.plan(4, [S(tp=4, dp_type="zero3"), S(tp=2, checkpoint=True)], 8,
                             embedding=S(dp_type="zero1"))),
        ("vit_pp", C.plan(4, [S(tp=2, dp_type="zero2"), S(dp_type="ddp")], 8,
                          embedding=S(dp_type="zero3"), pp=2, schedule="1f1b",
                          num_microbatches=2)),
    ]
    for rank_res in launch(4, _vit_work, cases, batches, ref):
        for k, r in rank_res:
            assert within(r), (k, describe(r))


def _swin_work(rank, world, cases, batches, ref):
    return [(k, run_case("swin-debug", p, batches, ref, max_grad_norm=CLIP, seq_len=256))
            for k, p in cases]


def test_swin_mixed_plans_match_single_process_on_4_ranks():
    """Per-stage widths and head counts, patch merging (the sequence shrinks 256 -> 64 -> 16
    between layers) and per-head relative-position bias tables under tp; no sequence split
    (Swin partitions windows outside attention)."""
    import torch

    from galvatron.plan import LayerStrategy as S

    g = torch.Generator().manual_seed(4)
    batches = [{"pixel_values": torch.randn(8, 3, 32, 32, generator=g),
                "labels": torch.randint(0, 10, (8,), generator=g)} for _ in range(STEPS)]
    ref = reference("swin-debug", batches, max_grad_norm=CLIP)
    mixed = [S(tp=2, dp_type="zero3"), S(tp=2, tp_consecutive=False, checkpoint=True), S(),
             S(tp=2, dp_type="zero1"), S(dp_type="zero2"), S(), S(tp=4), S(dp_type="zero3")]
    cases = [
        ("swin_mixed", C.plan(4, mixed, 8, embedding=S(dp_type="zero1"))),
        ("swin_pp", C.plan(4, [S(tp=2) if x.tp == 4 else x for x in mixed], 8,
                           embedding=S(dp_type="zero3"), pp=2,
                           stage_layers=(3, 5), schedule="gpipe", num_microbatches=2)),
    ]
    for rank_res in launch(4, _swin_work, cases, batches, ref):
        for k, r in rank_res:
            assert within(r), (k, describe(r))


def _bias_before_reduce(pm):
    """The bug a row-parallel bias invites: every tp rank adds it before the reduction."""
    import types

    import torch.nn.functional as F

    from galvatron.parallel import tensor_parallel as tp

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)
        op = tp.reduce_scatter_to_sp_region if self.seq_parallel else tp.reduce_from_tp_region
        return op(y, self.group)

    for chunk in pm.chunks:
        for m in chunk.modules():
            if isinstance(m, tp.RowLinear) and m.bias is not None:
                m.forward = types.MethodType(forward, m)


def _load_own_parts_and_train(path, plan, batches, ref):
    """This rank's parts from the sharded HF checkpoint (recording every shard opened and every
    tensor read), then training under ``plan``."""
    import safetensors

    from galvatron import parallel

    real, reads, opened = safetensors.safe_open, [], []

    def spy(file, *args, **kwargs):
        handle = real(file, *args, **kwargs)
        opened.append(os.path.basename(file))

        class Handle:
            def keys(self):
                return handle.keys()

            def get_tensor(self, key):
                reads.append(key)
                return handle.get_tensor(key)

        return Handle()

    safetensors.safe_open = spy
    try:
        model = parallel.load_hf_checkpoint_for_rank(path, plan)
    finally:
        safetensors.safe_open = real
    pm = parallel.build(model, plan, seed=0, seq_len=SEQ, lr=LR, betas=BETAS, eps=EPS,
                        weight_decay=WD, max_grad_norm=CLIP)
    losses, norms = train(pm, batches)
    r = compare(pm, losses, norms, ref)
    return {**r, "reads": reads, "opened": opened}


def _rope_bias_work(rank, world, cases, refs, ckpt=None):
    res = []
    for key, m, plan, ov in cases:
        for padded in (False, True):
            b, ref = refs[(key, padded)]
            r = run_case(m, plan, b, ref, max_grad_norm=CLIP, overrides={"num_layers": 4, **ov})
            res.append((f"{key}/{'padded' if padded else 'full'}", r))
    key, m, plan, ov = cases[0]  # negative control: the same check catches a bias added tp times
    b, ref = refs[(key, False)]
    r = run_case(m, plan, b, ref, max_grad_norm=CLIP, overrides={"num_layers": 4, **ov},
                 corrupt=_bias_before_reduce)
    res.append(("bias_added_per_rank", r))
    if ckpt is not None:  # each rank's parts read from a sharded HF checkpoint
        path, plan = ckpt
        res.append(("from_hf_checkpoint", _load_own_parts_and_train(path, plan, b, ref)))
    return res


def test_rope_scaled_biased_llama_mixed_plans_match_single_process_on_4_ranks(tmp_path):
    """llama3 / dynamic RoPE scaling + q/k/v/o and MLP biases (or q/k/v only) under tp
    (column-sliced and row biases), Megatron-SP, Ulysses, ZeRO-1/2/3, checkpointing and a 1F1B
    pipeline; with and without padding. Then an interleaved pipeline whose ranks load their
    parts from a sharded HF checkpoint written here: each reads exactly its tensors and opens
    only the shards holding them. One 4-rank launch."""
    import galvatron.models as M
    from galvatron import parallel

    cases = C.llama_rope_bias_world4()
    refs = {}
    for key, m, _, ov in cases:
        for padded in (False, True):
            b = make_batches(m, 8, SEQ, STEPS, padding=padded)
            refs[(key, padded)] = (b, reference(m, b, max_grad_norm=CLIP,
                                                overrides={"num_layers": 4, **ov}))
    for key, m, _, _ in cases[::2]:  # llama3 + all biases, dynamic + q/k/v biases
        b, ref = refs[(key, False)]
        plain = reference(m, b, max_grad_norm=CLIP, overrides={"num_layers": 4})
        assert abs(plain[0][-1] - ref[0][-1]) > 1e-4  # the scaling and biases matter
    M.save_hf_checkpoint(M.build("llama-debug", seed=0, num_layers=4, **C.LLAMA_ROPE_BIAS),
                         tmp_path, max_shard_bytes=60_000)
    with open(tmp_path / "model.safetensors.index.json") as f:
        weight_map = json.load(f)["weight_map"]
    assert len(set(weight_map.values())) > 4
    ckpt_plan = C.uniform(4, 4, 8, pp=2, virtual_stages=2, tp=2, dp_type="zero1",
                          schedule="interleaved_1f1b", num_microbatches=2)
    results = launch(4, _rope_bias_work, cases, refs, (str(tmp_path), ckpt_plan))
    for rank, rank_res in enumerate(results):
        key, r = rank_res[-1]
        parts = parallel.rank_parts(ckpt_plan, rank)
        want = {k for k in weight_map if any(k.startswith(f"model.layers.{i}.")
                                             for i in parts.layer_indices)}
        want |= {"model.embed_tokens.weight"} if parts.embedding else set()
        want |= {"model.norm.weight", "lm_head.weight"} if parts.head else set()
        assert sorted(r["reads"]) == sorted(want), rank  # each of its tensors once, no other
        assert sorted(r["opened"]) == sorted({weight_map[k] for k in want}), rank
    failures, covered = [], {}
    for rank_res in results:
        for key, r in rank_res:
            covered.setdefault(key.rsplit("/", 1)[0], set()).update(r["names"])
            if key != "bias_added_per_rank" and not within(r):
                failures.append(f"{key}: {describe(r)}")
    assert not failures, "\n".join(failures)
    for key, *_ in cases:
        assert set(refs[(key, False)][1][1]) <= covered[key], key
    assert set(refs[(cases[0][0], False)][1][1]) <= covered["from_hf_checkpoint"]
    assert any(n.endswith("o_proj.bias") for n in covered[cases[0][0]])
    assert any(n.endswith("k_proj.bias") for n in covered[cases[2][0]])
    control = [r for rank_res in results for k, r in rank_res if k == "bias_added_per_rank"]
    assert max(max(r["loss_err"] / r["loss_tol"], r["param_err"] / r["param_tol"]) for r in control) > 10
