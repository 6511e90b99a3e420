"""The typed trainer of the training job (``training/trainer.py``): it resolves the model once,
and keeps the CPU memory-tracking state itself (not as attributes added to the parallel
model). A pipeline's first step (torch sets up its backward then) is not tracked, the next
two are; one process without a pipeline tracks its first two steps."""

from __future__ import annotations

from tests.distributed.harness import launch


def _run(rank, world, pp):
    from galvatron.plan import Plan
    from galvatron.training import runtime_adapter
    from galvatron.training.config import build_config
    from galvatron.training.data import TokenData
    from galvatron.training.trainer import MEMORY_TRACKED_STEPS, Trainer

    cfg = build_config(None, {"model.name": "gpt2-debug", "model.seq_len": 16, "global_batch_size": 4,
                              "parallel.pp": pp, "parallel.num_microbatches": 2})
    data = TokenData.load("builtin", seq_len=16)
    model = runtime_adapter.resolve_model(cfg, {"vocab_size": max(512, data.vocab_size)})
    plan = Plan.uniform(world, model.config.num_layers, pp=pp, num_microbatches=2, global_batch_size=4)
    trainer = Trainer.build(cfg, model, plan, data)
    seen = []
    for step in range(4):
        trainer.set_lr(1e-3)
        loss, norm = trainer.train_step(trainer.batch(step, 4))
        seen.append((trainer.steps_tracked, trainer.peak_memory() > 0, loss > 0, norm is not None))
    extra = [a for a in vars(trainer.pm) if a.startswith("_")]
    return seen, extra, MEMORY_TRACKED_STEPS


def test_one_process_tracks_its_first_two_steps():
    (seen, extra, tracked), = launch(1, _run, 1)
    assert tracked == 2 and not extra
    assert seen == [(1, True, True, True), (2, True, True, True), (2, True, True, True), (2, True, True, True)]


def test_a_pipeline_tracks_the_steps_after_its_first():
    for seen, extra, _ in launch(2, _run, 2):
        assert not extra
        assert [s[0] for s in seen] == [0, 1, 2, 2]
        assert [s[1] for s in seen] == [False, True, True, True]  # -1 until a tracked step
