"""T5 with different encoder and decoder depths trains like a single process on 2 ranks.

The layer list is ``num_layers`` encoder layers then ``num_decoder_layers`` decoder layers, so
the stream swap and the start of the decoder's shared relative-bias table move with the
depths; the plans put a stage boundary inside the deeper stack (its table on both stages)
and mix tp, Megatron-SP, Ulysses and ZeRO across the layers sharing a table."""

from __future__ import annotations

from galvatron.plan import LayerStrategy as S
from tests.distributed import cases as C
from tests.distributed.equivalence import describe, make_batches, reference, run_case, within
from tests.distributed.harness import launch

STEPS, SEQ, DEC, CLIP, GBS = 3, 16, 8, 1.0, 4
DEEP_ENCODER = {"num_layers": 3, "num_decoder_layers": 1}  # layers 0-2 encoder, 3 decoder
DEEP_DECODER = {"num_layers": 1, "num_decoder_layers": 3}  # layer 0 encoder, 1-3 decoder

CASES = [
    # the encoder's table on both stages (layers 0, 1 | 2), the one decoder layer on stage 1
    ("deep_encoder_pp/t5", DEEP_ENCODER, C.plan(2, [S(), S(checkpoint=True), S(dp_type="zero3"), S()],
                                                GBS, pp=2, stage_layers=(2, 2), schedule="1f1b",
                                                num_microbatches=2)),
    # the decoder's table on both stages (layer 1 | 2, 3)
    ("deep_decoder_pp/t5", DEEP_DECODER, C.plan(2, [S(), S(dp_type="zero1"), S(checkpoint=True), S()],
                                                GBS, pp=2, stage_layers=(2, 2), schedule="gpipe",
                                                num_microbatches=2)),
    # one stage: the decoder's three layers under three different layouts
    ("deep_decoder_mixed/t5", DEEP_DECODER, C.plan(2, [
        S(dp_type="zero3"), S(tp=2), S(sp=2, sp_kind="ulysses", checkpoint=True),
        S(tp=2, sp_kind="megatron", dp_type="zero2"),
    ], GBS, embedding=S(tp=2, sp_kind="megatron"))),
]


def _refs():
    batches = make_batches(C.T5, GBS, SEQ, STEPS, padding=True, decoder_seq=DEC)
    return {key: (batches, reference(C.T5, batches, max_grad_norm=CLIP, overrides=ov), ov)
            for key, ov in (("enc", DEEP_ENCODER), ("dec", DEEP_DECODER))}


def _work(rank, world, refs):
    out = []
    for key, ov, plan in CASES:
        batches, ref, _ = refs["enc" if ov is DEEP_ENCODER else "dec"]
        out.append((key, run_case(C.T5, plan, batches, ref, max_grad_norm=CLIP, overrides=ov)))
    return out


def test_t5_with_unequal_depths_matches_single_process_on_2_ranks():
    refs = _refs()
    assert "layers.3.cross_attn.q_proj.weight" in refs["enc"][1][1]  # layer 3: the decoder
    assert "layers.1.cross_attn.q_proj.weight" in refs["dec"][1][1]  # layer 1: the decoder
    results = launch(2, _work, refs)
    failures = []
    for i, (key, ov, _) in enumerate(CASES):
        ref_names = set(refs["enc" if ov is DEEP_ENCODER else "dec"][1][1])
        covered = set()
        for rank_res in results:
            k, r = rank_res[i]
            assert k == key
            covered.update(r["names"])
            if not within(r):
                failures.append(f"{key}: {describe(r)}")
        if ref_names - covered:
            failures.append(f"{key}: parameters on no rank: {sorted(ref_names - covered)}")
    assert not failures, "\n".join(failures)
