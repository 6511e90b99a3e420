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
