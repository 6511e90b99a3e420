"""The model profiler measures a T5 whose encoder and decoder depths differ: one entry per
layer type that the model has (a 1-layer encoder has only its last-layer type)."""

from __future__ import annotations

import galvatron
from galvatron.profiler.model import ModelProfilerOptions, profile_model

QUICK = ModelProfilerOptions(batch_sizes=(1, 2), max_degree=2, warmup=1, repeats=1, verbose=False)


def test_measured_profile_of_a_t5_with_a_one_layer_encoder_and_a_deeper_decoder():
    mp = profile_model("t5-debug", seq_len=32, precision="fp32", opts=QUICK, num_layers=1,
                       num_decoder_layers=3)
    assert [mp.layer_types[i].name for i in mp.layer_type_of] == ["t5_encoder_last"] + ["t5_decoder"] * 3
    hw = galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=2)
    res = galvatron.search(mp, hw, memory_gb=4, global_batch_size=4, uniform_baseline=False, num_threads=1)
    assert res.plan.num_layers == 4
