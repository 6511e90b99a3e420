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


def test_layer_shared_parameters_are_found_and_taken_out_of_the_layers():
    """T5: one bias table per stack, shared by its layers; detaching keeps the layers' forward
    (plain attribute) but removes the table from every layer's parameters."""
    import torch
    from torch import nn

    from galvatron.parallel.shared import detach_from_layers, find_shared, holders

    model = models.build("t5-debug", seed=0, num_layers=2)  # layers 0-1 encoder, 2-3 decoder
    batch = {"input_ids": torch.randint(0, 512, (2, 8)), "decoder_input_ids": torch.randint(0, 512, (2, 8))}
    ref = model(**batch)
    shared = find_shared(model.layers)
    assert [(s.name, s.layers) for s in shared] == [
        ("layers.0.attn.rel_bias.weight", (0, 1)), ("layers.2.attn.rel_bias.weight", (2, 3))]
    assert holders(shared[1], (3, 1), pp=2, n=2) == [[0, 1, 2, 3]]  # decoder table: both stages
    assert holders(shared[0], (3, 1), pp=2, n=2) == [[0, 1], [2], [3]]
    for s in shared:
        detach_from_layers(s)
    assert all(not any(p is s.param for p in layer.parameters())
               for s in shared for layer in model.layers)
    assert torch.equal(model(**batch), ref)
    assert find_shared(models.build("gpt2-debug", seed=0).layers) == []
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="only parameter of a submodule"):
        find_shared(nn.ModuleList([nn.Sequential(lin, nn.Linear(2, 2)), nn.Sequential(lin)]))
