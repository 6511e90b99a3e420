"""Runtime plan validation that needs no process group."""

import pytest

from galvatron import LayerStrategy, Plan, models
from galvatron.parallel.mesh import validate


def test_swin_rejects_sequence_parallel_layers():
    model = models.build("swin-debug", seed=0)
    n = len(model.layers)
    for kind in ("ulysses", "megatron"):
        s = LayerStrategy(sp=2, sp_kind="ulysses") if kind == "ulysses" else LayerStrategy(tp=2, sp_kind="megatron")
        plan = Plan(world_size=2, layers=(LayerStrategy(),) * (n - 1) + (s,), global_batch_size=2)
        with pytest.raises(ValueError, match=f"layers\\[{n - 1}\\]: Swin's window attention needs the whole sequence"):
            validate(plan, model, seq_len=64)


def test_t5_decoder_length_must_divide_every_sequence_split():
    """Both T5 streams pass through every layer's layout: a decoder length that a Megatron-SP
    layer (4 shards) or the pipeline boundary cannot split is refused before any collective."""
    model = models.build("t5-debug", seed=0, device="meta", num_layers=1)  # 2 layers
    sp = LayerStrategy(tp=4, sp_kind="megatron")
    plan = Plan(world_size=4, layers=(LayerStrategy(), sp), global_batch_size=4)
    validate(plan, model, seq_len=16, decoder_seq_len=8)
    with pytest.raises(ValueError, match=r"layers\[1\]: decoder length \(decoder_seq_len\) 6 is "
                                         r"not divisible by its 4 sequence shards .*accepted"):
        validate(plan, model, seq_len=16, decoder_seq_len=6)
    tp = LayerStrategy(tp=2)  # micro-batch 1 on 2 devices: the boundary splits the sequence
    pp = Plan(world_size=4, layers=(tp, tp), embedding=tp, global_batch_size=4, pp=2,
              num_microbatches=4)
    with pytest.raises(ValueError, match=r"pipeline boundary: decoder length .* 3 must be divisible by 2"):
        validate(pp, model, seq_len=16, decoder_seq_len=3)
    with pytest.raises(ValueError, match=r"decoder_seq_len=8: only encoder-decoder .* GPT2Model"):
        validate(Plan(world_size=2, layers=(LayerStrategy(),) * 2, global_batch_size=2),
                 models.build("gpt2-debug", seed=0, device="meta"), seq_len=16, decoder_seq_len=8)
