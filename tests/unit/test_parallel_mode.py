"""``parallel.mode`` says how the job obtains its plan; the older spelling (``pp: 0`` = search,
``pp > 0`` = one strategy for every layer) is still read and resolves to the explicit mode,
which is what RUN/config.yaml records."""

from __future__ import annotations

import pytest

from galvatron.training.config import ParallelMode, build_config, dump_yaml
from galvatron.training.job import obtain_plan


@pytest.mark.parametrize("flags,mode", [
    ({}, "search"),
    ({"parallel.pp": 2}, "uniform"),  # the --pp flag / an old config's pp > 0
    ({"parallel.pp": 0}, "search"),  # an old config's explicit pp: 0
    ({"parallel.search": False}, "data_parallel"),
    ({"parallel.plan": "p.json", "parallel.pp": 2}, "plan"),  # a plan file wins, as before
    ({"parallel.mode": "uniform"}, "uniform"),
    ({"parallel.mode": "search", "parallel.pp": 2}, "search"),  # an explicit mode wins
])
def test_the_mode_is_resolved_once_and_recorded(flags, mode, tmp_path):
    cfg = build_config(None, flags)
    assert cfg.parallel.mode == mode
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_yaml(cfg))
    again = build_config(str(saved))
    assert again.parallel.mode == mode and again.parallel.resolve_mode() is ParallelMode(mode)


def test_old_toml_with_pp_reads_as_uniform_mode(tmp_path):
    (tmp_path / "c.toml").write_text("[parallel]\npp = 2\ntp = 2\n")
    cfg = build_config(str(tmp_path / "c.toml"))
    assert cfg.parallel.mode == "uniform"
    plan, how = obtain_plan(cfg, 4, 4)
    assert (plan.pp, plan.layers[0].tp, how) == (2, 2, "uniform-mode flags")


def test_uniform_mode_without_pp_is_one_stage():
    cfg = build_config(None, {"parallel.mode": "uniform", "parallel.tp": 2})
    plan, _ = obtain_plan(cfg, 4, 4)
    assert (plan.pp, plan.layers[0].tp) == (1, 2)


def test_data_parallel_mode_is_plain_data_parallelism():
    cfg = build_config(None, {"parallel.mode": "data_parallel"})
    plan, how = obtain_plan(cfg, 2, 4)
    assert (plan.pp, plan.layers[0].tp, plan.layers[0].sp) == (1, 1, 1) and "no search" in how


@pytest.mark.parametrize("flags,words", [
    ({"parallel.mode": "global"}, ["parallel.mode", "'global'", "'uniform'", "'search'"]),
    ({"parallel.mode": "plan"}, ["parallel.plan", "'plan'"]),
    ({"parallel.pp": -1}, ["parallel.pp", ">= 0"]),
])
def test_a_bad_mode_is_a_value_error_naming_the_field(flags, words):
    with pytest.raises(ValueError) as e:
        build_config(None, flags)
    assert all(w in str(e.value) for w in words), str(e.value)
