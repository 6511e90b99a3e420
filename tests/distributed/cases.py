"""Plans the equivalence tests run, grouped by world size (one launch per group)."""

from __future__ import annotations

from galvatron.plan import LayerStrategy as S
from galvatron.plan import Plan

FP32 = dict(precision="fp32")
MODELS = ("gpt2-debug", "llama-debug", "bert-debug", "t5-debug")
T5 = "t5-debug"  # every T5 case has 4 layers: 2 encoder (sharing one bias table), 2 decoder


def uniform(world, layers, gbs, **kw):
    return Plan.uniform(world, layers, global_batch_size=gbs, **FP32, **kw)


def plan(world, layers, gbs, embedding=None, **kw):
    return Plan(world_size=world, layers=tuple(layers), global_batch_size=gbs,
                embedding=embedding or S(), **FP32, **kw).validate()


def world2():
    """Every technique alone on 2 ranks, both models (2 layers, global batch 4)."""
    out = []
    for m in MODELS[:2]:
        out += [
            (f"dp/{m}", m, uniform(2, 2, 4)),
            (f"zero1/{m}", m, uniform(2, 2, 4, dp_type="zero1")),
            (f"zero2/{m}", m, uniform(2, 2, 4, dp_type="zero2")),
            (f"zero3/{m}", m, uniform(2, 2, 4, dp_type="zero3")),
            (f"tp/{m}", m, uniform(2, 2, 4, tp=2)),
            (f"tp_megatron_sp/{m}", m, uniform(2, 2, 4, tp=2, sp_kind="megatron")),
            (f"ulysses/{m}", m, uniform(2, 2, 4, sp=2)),
            (f"checkpoint/{m}", m, uniform(2, 2, 4, checkpoint=True)),
            (f"selective_checkpoint/{m}", m, uniform(2, 2, 4, checkpoint="selective")),
            (f"pp_gpipe/{m}", m, uniform(2, 2, 4, pp=2, schedule="gpipe", num_microbatches=2)),
            (f"pp_1f1b/{m}", m, uniform(2, 2, 4, pp=2, schedule="1f1b", num_microbatches=4)),
            (f"microbatches/{m}", m, uniform(2, 2, 4, num_microbatches=2, dp_type="zero3")),
        ]
    return out + [
        # encoder-decoder, relative-bias tables shared by layers under different strategies
        ("t5_mixed/t5", T5, plan(2, [
            S(tp=2), S(dp_type="zero3", checkpoint=True), S(sp=2, sp_kind="ulysses"),
            S(tp=2, sp_kind="megatron", dp_type="zero1"),
        ], 4, embedding=S(dp_type="zero3"))),  # tied embedding+head: one FSDP2 unit
        # the decoder's table on both stages (layers 2 | 3), the encoder's on stage 0 only
        ("t5_pp_table_across_stages/t5", T5, plan(2, [
            S(), S(checkpoint=True), S(dp_type="zero3"), S(),
        ], 4, pp=2, stage_layers=(3, 1), schedule="1f1b", num_microbatches=2)),
    ]


def world4():
    """Interleaving and mixed layer-wise plans on 4 ranks (4-layer models, global batch 8)."""
    g, ll = "gpt2-debug", "llama-debug"
    return [
        ("interleaved/gpt2", g, uniform(4, 4, 8, pp=2, virtual_stages=2, tp=2,
                                        schedule="interleaved_1f1b", num_microbatches=2)),
        ("pp_zero1_tied/gpt2", g, uniform(4, 4, 8, pp=2, dp_type="zero1", num_microbatches=2)),
        ("interleaved/llama", ll, uniform(4, 4, 8, pp=2, virtual_stages=2, dp_type="zero1",
                                          schedule="interleaved_1f1b", num_microbatches=4)),
        ("mixed_tp_changes/gpt2", g, plan(4, [
            S(tp=4), S(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint=True),
            S(sp=2, sp_kind="ulysses", dp_type="zero1"), S(tp=2, tp_consecutive=False, dp_type="zero2"),
        ], 8, embedding=S(tp=2, dp_type="ddp"))),
        ("mixed_ulysses_next_to_tp/llama", ll, plan(4, [
            S(tp=2), S(sp=2, sp_kind="ulysses", checkpoint=True, tp_consecutive=False),
            S(dp_type="zero3"),
            S(tp=2, sp_kind="megatron", tp_consecutive=False),
        ], 8, embedding=S(tp=4, sp_kind="megatron", dp_type="zero1"))),
        # tp strided x Ulysses with dp = 1: the sequence blocks follow the sp coordinates
        ("mixed_strided_tp_ulysses_dp1/gpt2", g, plan(4, [
            S(tp=2, sp=2, sp_kind="ulysses", tp_consecutive=False), S(tp=2),
            S(tp=2, sp=2, sp_kind="ulysses"), S(tp=2, sp=2, sp_kind="ulysses", tp_consecutive=False),
        ], 8, embedding=S(tp=2))),
        ("mixed_tp_ulysses_combined/gpt2", g, plan(4, [
            S(tp=2, sp=2, sp_kind="ulysses"), S(tp=4, sp_kind="megatron", checkpoint=True),
            S(dp_type="zero2"), S(tp=2, dp_type="zero3"),
        ], 8, embedding=S(sp=2, sp_kind="ulysses", dp_type="zero3"))),
        ("pp_nonuniform_mixed/llama", ll, plan(4, [
            S(tp=2, dp_type="zero3"), S(sp=2, sp_kind="ulysses"), S(checkpoint=True),
            S(tp=2, sp_kind="megatron", dp_type="zero1"),
        ], 8, embedding=S(tp=2, tp_consecutive=False), pp=2, stage_layers=(1, 3), schedule="1f1b",
            num_microbatches=2)),
        ("mixed_post_norm_encoder/bert", "bert-debug", plan(4, [
            S(tp=2, sp_kind="megatron", dp_type="zero3"), S(sp=2, sp_kind="ulysses"),
            S(tp=4, checkpoint=True), S(dp_type="zero1"),
        ], 8, embedding=S(tp=2, dp_type="zero2"))),
        ("pp_nonuniform_gpipe_tied/gpt2", g, plan(4, [
            S(tp=2), S(dp_type="zero2"), S(tp=2, sp_kind="megatron", checkpoint=True),
            S(dp_type="zero3"),
        ], 8, embedding=S(dp_type="zero3"), pp=2, stage_layers=(3, 1), schedule="gpipe",
            num_microbatches=2)),
        ("mixed_encoder_decoder/t5", T5, plan(4, [
            S(tp=4, checkpoint=True), S(tp=2, sp=2, sp_kind="ulysses", dp_type="zero3"),
            S(tp=2, sp_kind="megatron", tp_consecutive=False, dp_type="zero2"),
            S(sp=2, sp_kind="ulysses", dp_type="zero1"),
        ], 8, embedding=S(tp=2, sp_kind="megatron", dp_type="zero1"))),
        # selective checkpointing under every sharding (the recompute replays the collectives)
        ("mixed_selective/llama", ll, plan(4, [
            S(tp=2, checkpoint="selective"),
            S(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint="selective"),
            S(sp=2, sp_kind="ulysses", checkpoint="selective", tp_consecutive=False),
            S(tp=2, tp_consecutive=False, dp_type="zero1", checkpoint="selective"),
        ], 8, embedding=S(tp=2, dp_type="zero2"), num_microbatches=2)),
        ("selective_encoder_decoder/t5", T5, plan(4, [
            S(tp=2, sp_kind="megatron", checkpoint="selective"), S(checkpoint="selective"),
            S(tp=4, checkpoint="selective", dp_type="zero3"),
            S(sp=2, sp_kind="ulysses", checkpoint="selective"),
        ], 8, embedding=S(tp=2, dp_type="zero1"))),
        # the encoder's table on both stages (layers 0 | 1), the decoder's on stage 1 only
        ("pp_encoder_decoder/t5", T5, plan(4, [
            S(tp=2, dp_type="zero3"), S(sp=2, sp_kind="ulysses"),
            S(tp=2, sp_kind="megatron", checkpoint=True), S(dp_type="zero1"),
        ], 8, embedding=S(tp=2, dp_type="zero2"), pp=2, stage_layers=(1, 3), schedule="gpipe",
            num_microbatches=2)),
    ]


# LLaMA with llama3 RoPE scaling acting on a 16-token sequence (original length 8: the low
# frequencies are divided by 8, the middle ones blended) and biases on q/k/v/o and the MLP
LLAMA_ROPE_BIAS = dict(rope_type="llama3", rope_factor=8.0, rope_original_max_seq_len=8,
                       rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
                       attention_bias=True, mlp_bias=True)
# dynamic NTK acting past 8 tokens (its base depends on the whole sequence's length, which
# attention must see under Ulysses and Megatron-SP too); Qwen2-style q/k/v-only biases
LLAMA_DYNAMIC_QKV_BIAS = dict(rope_type="dynamic", rope_factor=4.0, rope_original_max_seq_len=8,
                              attention_bias=True, o_proj_bias=False)


def llama_rope_bias_world4():
    """Mixed layer-wise plans on 4 ranks (4 layers, global batch 8) as ``(key, model, plan,
    overrides)``: column-sliced q/k/v/gate/up biases, row-parallel o/down biases added once
    after the all-reduce (plain tp) or the reduce-scatter (Megatron-SP), Ulysses around scaled
    RoPE."""
    ll = "llama-debug"
    out = [
        ("rope_bias_mixed/llama", ll, plan(4, [
            S(tp=2), S(tp=2, sp_kind="megatron", dp_type="zero3", checkpoint=True),
            S(sp=2, sp_kind="ulysses", dp_type="zero1"), S(tp=2, tp_consecutive=False, dp_type="zero2"),
        ], 8, embedding=S(tp=4, sp_kind="megatron", dp_type="zero1"))),
        ("rope_bias_pp_mixed/llama", ll, plan(4, [
            S(tp=2, sp_kind="megatron"), S(sp=2, sp_kind="ulysses", checkpoint=True),
            S(tp=2, dp_type="zero3"), S(dp_type="zero1"),
        ], 8, embedding=S(tp=2), pp=2, stage_layers=(2, 2), schedule="1f1b", num_microbatches=2)),
    ]
    out = [(k, m, p, LLAMA_ROPE_BIAS) for k, m, p in out]
    return out + [("dynamic_qkv_bias_mixed/llama", ll, plan(4, [
        S(sp=2, sp_kind="ulysses"), S(tp=2, sp_kind="megatron", dp_type="zero3"),
        S(tp=2, checkpoint=True), S(sp=2, sp_kind="ulysses", tp_consecutive=False, dp_type="zero1"),
    ], 8, embedding=S(tp=2, dp_type="zero2")), LLAMA_DYNAMIC_QKV_BIAS)]


def world8():
    """One 8-rank plan: pp2 x (tp2 x dp2) with ZeRO-3, Ulysses and a Megatron-SP layer."""
    return [
        ("pp2_tp2_dp2/gpt2", "gpt2-debug", plan(8, [
            S(tp=2, dp_type="zero3"), S(sp=2, sp_kind="ulysses", dp_type="zero1"),
            S(tp=2, sp_kind="megatron", checkpoint=True), S(tp=4),
        ], 8, embedding=S(tp=2, dp_type="zero2"), pp=2, stage_layers=(2, 2),
            schedule="1f1b", num_microbatches=2)),
    ]
