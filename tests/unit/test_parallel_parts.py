"""rank_parts: the layers / embedding / head each rank holds, as parallel.build keeps them."""

from __future__ import annotations

import pytest

from galvatron.parallel import RankParts, load_hf_checkpoint_for_rank, rank_parts
from galvatron.plan import LayerStrategy as S
from galvatron.plan import Plan


def test_rank_parts_of_a_nonuniform_pipeline():
    plan = Plan(world_size=4, layers=(S(),) * 4, global_batch_size=8, pp=2, stage_layers=(1, 3),
                num_microbatches=2, schedule="1f1b").validate()
    assert [rank_parts(plan, r) for r in range(4)] == [RankParts((0,), True, False)] * 2 + [
        RankParts((1, 2, 3), False, True)] * 2


def test_rank_parts_of_interleaved_stages_hold_every_pp_th_chunk():
    plan = Plan.uniform(4, 8, global_batch_size=8, pp=2, virtual_stages=2,
                        schedule="interleaved_1f1b", num_microbatches=2)
    assert rank_parts(plan, 0) == RankParts((0, 1, 4, 5), True, False)
    assert rank_parts(plan, 3) == RankParts((2, 3, 6, 7), False, True)


def test_rank_parts_without_pipeline_is_the_whole_model():
    assert rank_parts(Plan.uniform(2, 3, global_batch_size=4), 1) == RankParts((0, 1, 2), True, True)


def test_bad_rank_is_a_value_error(tmp_path):
    plan = Plan.uniform(2, 2, global_batch_size=4)
    with pytest.raises(ValueError, match="rank 2 out of range"):
        rank_parts(plan, 2)
    with pytest.raises(ValueError, match="rank: required"):
        load_hf_checkpoint_for_rank(tmp_path, plan)
