"""Plan sets the fidelity checks and benchmarks use: mixed layer-wise plans of real models
that cover every plan dimension (pp and schedules, tp with and without Megatron-SP, Ulysses,
every dp type, checkpointing, bf16)."""

from __future__ import annotations

from galvatron.plan import LayerStrategy as S
from galvatron.plan import Plan


def llama2_7b_on_8() -> list[tuple[str, Plan]]:
    """llama2-7b (32 layers) on 8 devices."""
    bf = dict(precision="bf16")
    return [
        ("pp2_mixed_1f1b", Plan(world_size=8, pp=2, layers=tuple(
            [S(tp=2, sp_kind="megatron", dp_type="zero3")] * 8 + [S(tp=4, dp_type="zero1")] * 8
            + [S(sp=2, sp_kind="ulysses", dp_type="zero2", checkpoint=True)] * 8
            + [S(tp=2, dp_type="ddp", checkpoint=True)] * 8),
            embedding=S(tp=2, dp_type="zero3"), schedule="1f1b", num_microbatches=8,
            global_batch_size=16, **bf)),
        ("pp1_mixed", Plan(world_size=8, layers=tuple(
            [S(dp_type="zero3", checkpoint=True)] * 8 + [S(tp=8, sp_kind="megatron", dp_type="zero1")] * 8
            + [S(sp=4, sp_kind="ulysses", dp_type="zero3")] * 8 + [S(tp=4, dp_type="zero2", checkpoint=True)] * 8),
            embedding=S(tp=1, dp_type="zero3"), num_microbatches=2, global_batch_size=16, **bf)),
        ("pp4_gpipe_tp2", Plan(world_size=8, pp=4, layers=tuple(
            [S(tp=2, dp_type="zero1", checkpoint=True)] * 16 + [S(tp=2, sp_kind="megatron", dp_type="ddp")] * 16),
            embedding=S(tp=2, dp_type="zero1"), schedule="gpipe", num_microbatches=4, global_batch_size=8,
            **bf)),
        ("pp2_interleaved", Plan(world_size=8, pp=2, virtual_stages=2, layers=tuple(
            [S(tp=4, sp_kind="megatron", dp_type="zero1")] * 16 + [S(tp=2, dp_type="zero3", checkpoint=True)] * 16),
            embedding=S(tp=4, dp_type="zero1"), schedule="interleaved_1f1b", num_microbatches=4,
            global_batch_size=8, **bf)),
    ]


def llama2_70b_on_64() -> list[tuple[str, Plan]]:
    """llama2-70b (80 layers) on 64 devices."""
    bf = dict(precision="bf16")
    return [
        ("pp4_mixed_1f1b", Plan(world_size=64, pp=4, layers=tuple(
            [S(tp=8, sp_kind="megatron", dp_type="zero3")] * 20 + [S(tp=4, dp_type="zero1", checkpoint=True)] * 20
            + [S(sp=8, sp_kind="ulysses", dp_type="zero2", checkpoint=True)] * 20
            + [S(tp=8, dp_type="ddp", checkpoint=True)] * 20),
            embedding=S(tp=8, dp_type="zero3"), schedule="1f1b", num_microbatches=8,
            global_batch_size=32, **bf)),
        ("pp8_tp8_sp", Plan(world_size=64, pp=8, layers=tuple(
            [S(tp=8, sp_kind="megatron", dp_type="zero1", checkpoint=True)] * 80),
            embedding=S(tp=8, dp_type="zero1"), schedule="1f1b", num_microbatches=8,
            global_batch_size=8, **bf)),
    ]


SMALL_OVERRIDES = {"num_layers": 4}  # llama2-7b's layer shapes, 4 layers (seq 512)


def llama2_7b_4layers_on_8() -> list[tuple[str, Plan, list[int]]]:
    """Small mixed plans for the fast check (``tests/distributed/test_fakecheck_accuracy.py``):
    llama2-7b with :data:`SMALL_OVERRIDES` on 8 devices; with the ranks measured."""
    bf = dict(precision="bf16")
    return [
        ("pp1_mixed", Plan(world_size=8, layers=(
            S(tp=2, dp_type="zero3"), S(tp=2, dp_type="ddp"),
            S(sp=2, sp_kind="ulysses", dp_type="zero2", checkpoint=True),
            S(tp=2, sp_kind="megatron", dp_type="zero1")),
            embedding=S(tp=2, dp_type="zero3"), num_microbatches=2, global_batch_size=8, **bf), [0]),
        ("pp2_1f1b", Plan(world_size=8, pp=2, layers=(
            S(sp=2, sp_kind="ulysses", dp_type="zero2", checkpoint=True), S(tp=2, dp_type="ddp"),
            S(tp=2, sp_kind="megatron", dp_type="zero3"), S(tp=4, dp_type="zero1", checkpoint=True)),
            embedding=S(tp=2, dp_type="zero1"), schedule="1f1b", num_microbatches=4,
            global_batch_size=16, **bf), [0, 4]),
    ]
