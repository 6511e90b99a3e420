"""What a new user meets first in the training job, piece by piece (no processes spawned):
run directories, the default model, the data kind, resuming, cache keys, one process, the
search and runtime agreeing on vision models, and the CLI's output (issue 13)."""

from __future__ import annotations

import json
import os

import pytest

import galvatron
from galvatron import models
from galvatron.cli import main
from galvatron.plan import LayerStrategy, Plan
from galvatron.training.config import TrainConfig, build_config
from galvatron.training.resume import check_steps, describe
from galvatron.training.rundir import fresh_run_dir, point_latest, resolve_run_dir

EXAMPLE_PLAN = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "plans", "gpt2-debug_4cpu_mixed.json")


# ------------------------------------------------------------------ 3. never lose a run
def test_each_run_gets_a_fresh_directory_and_latest_points_at_it(tmp_path):
    root = str(tmp_path / "runs")
    a, fresh = resolve_run_dir("", "gpt2-mini", resume=False, root=root)
    assert fresh and os.path.basename(a).startswith("gpt2-mini-")
    os.makedirs(a)
    (tmp_path / "runs" / os.path.basename(a) / "config.yaml").write_text("x")
    point_latest(a, root)
    b = fresh_run_dir("gpt2-mini", root, now=os.path.getmtime(a))  # the same second: another name
    assert b != a and not os.path.exists(b)
    assert os.path.realpath(os.path.join(root, "latest")) == os.path.realpath(a)
    # --resume without --run-dir continues runs/latest
    again, fresh = resolve_run_dir("", "gpt2-mini", resume=True, root=root)
    assert not fresh and os.path.realpath(again) == os.path.realpath(a)


def test_a_run_directory_holding_a_run_is_refused_without_resume_with_both_ways_forward(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    assert resolve_run_dir(str(run), "gpt2-mini", resume=False) == (str(run), False)  # empty: fine
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"already holds a run; pass --resume .* or choose another --run-dir"):
        resolve_run_dir(str(run), "gpt2-mini", resume=False)
    assert resolve_run_dir(str(run), "gpt2-mini", resume=True) == (str(run), False)
    with pytest.raises(ValueError, match="no --run-dir given and no .*latest"):
        resolve_run_dir("", "gpt2-mini", resume=True, root=str(tmp_path / "none"))


# ------------------------------------------------------------------ 4, 5. default model, data kind
def test_the_default_model_is_a_named_flavour_without_hidden_overrides():
    cfg = TrainConfig()
    assert cfg.model.overrides == {} and cfg.model.name in models.list()
    mc = models.get_config(cfg.model.name)
    assert (mc.num_layers, mc.hidden_size) == (4, 128)  # the small GPT the quick start trains
    # the shipped example plan fits the model it records, and the debug config names no overrides
    plan = Plan.load(EXAMPLE_PLAN)
    assert plan.model["name"] == "gpt2-debug"
    plan.validate(num_layers=len(models.spec(plan.model["name"]).layer_types))
    cfg = build_config(os.path.join(os.path.dirname(EXAMPLE_PLAN), "..", "configs", "debug_cpu.yaml"))
    assert cfg.model.overrides == {} and cfg.model.name == "gpt2-mini"


@pytest.mark.parametrize("model,kind", [("vit-debug", "images"), ("swin-debug", "images"),
                                        ("gpt2-mini", "builtin"), ("t5-debug", "builtin")])
def test_the_data_kind_follows_the_model(model, kind):
    assert build_config(None, {"model.name": model}).data.kind == kind


def test_a_data_kind_that_does_not_fit_the_model_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"data.kind: 'builtin' does not fit model 'vit-debug'.*'images'"):
        build_config(None, {"model.name": "vit-debug"}, ["--data.kind", "builtin"])
    with pytest.raises(ValueError, match=r"data.kind: 'images' does not fit model 'gpt2-mini'"):
        build_config(None, None, ["--data.kind", "images"])


def test_the_search_keeps_a_vision_models_embedding_data_parallel_as_the_runtime_requires():
    hw = galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=4)
    for name in ("vit-debug", "swin-debug"):
        mp = galvatron.model_profile(name, hardware=hw, precision="fp32")
        assert sorted(mp.embedding.embed_fwd_ms_per_sample) == [1]
        for gbs in (4, 16, 64):
            res = galvatron.search(mp, hw, global_batch_size=gbs)
            assert (res.plan.embedding.tp, res.plan.embedding.sp) == (1, 1), (name, gbs, res.plan.embedding)
    # text models still may split the embedding through the vocabulary
    mp = galvatron.model_profile("gpt2-debug", hardware=hw, precision="fp32")
    assert sorted(mp.embedding.embed_fwd_ms_per_sample) == [1, 2, 4]


# ------------------------------------------------------------------ 6. resuming
def _plan(world=2, **kw):
    return Plan.uniform(world, 4, global_batch_size=8, precision="fp32", **kw)


def test_resume_refuses_a_checkpoint_past_steps_naming_both_counts():
    with pytest.raises(ValueError, match=r"at step 100, beyond --steps 20; pass --steps larger than 100"):
        check_steps(100, 20, "runs/x/checkpoints/step_00000100")
    check_steps(20, 20, "p")  # a finished run: nothing to refuse
    check_steps(5, 20, "p")


def test_resume_says_resharded_only_when_the_parameter_layout_changed_and_notes_a_dtype_change():
    saved = _plan().to_dict()
    assert describe(saved, _plan()) == ["same plan"]
    how, = describe(saved, _plan(num_microbatches=2))
    assert how.startswith("another plan with the same parameter layout") and "resharded" not in how.split(":")[0]
    how, = describe(saved, _plan(world=4, tp=2), "pp=1, 1 layer strategy")
    assert how == "resharded from world size 2, pp=1, 1 layer strategy"
    how, note = describe(saved, _plan().replace(precision="bf16"))
    assert note.startswith("note: the checkpoint was trained in fp32, this run computes in bf16")


# ------------------------------------------------------------------ 1, 2, 8. one process, cache keys
def test_one_process_needs_no_collective_measurement(tmp_path):
    from galvatron.training.job import _hardware

    cfg = build_config(None, {"run_dir": str(tmp_path / "r"), "nproc": 1})
    hw = _hardware(cfg, 1)  # before: "need at least 2 processes to measure collectives"
    assert hw.num_nodes * hw.gpus_per_node == 1


def test_measured_model_profiles_are_cached_by_everything_they_depend_on():
    from galvatron.training.profile_cache import model_cache_key

    base = dict(model="gpt2-mini", overrides={}, seq_len=128, dtype="fp32", world=4, max_degree=4, share=2.0)
    keys = {model_cache_key(**base)}
    for change in ({"model": "llama-debug"}, {"overrides": {"num_layers": 2}}, {"seq_len": 64},
                   {"dtype": "bf16"}, {"world": 2, "max_degree": 2, "share": 1.0}):
        keys.add(model_cache_key(**(base | change)))
    assert len(keys) == 6
    assert model_cache_key(**base) == model_cache_key(**base)  # the same inputs: the same file


# ------------------------------------------------------------------ 7, 11. the command line
def test_models_lists_the_zoo_with_sizes(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "family", "parameters", "layers", "hidden", "heads", "aliases"]
    assert len(out) == 1 + len(models.list())
    assert [line.split() for line in out if line.startswith("gpt2-small ")][0][-1] == "gpt2"  # the alias
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == set(models.list())
    assert rows["gpt2-small"]["aliases"] == ["gpt2"] and rows["gpt2-xl"]["aliases"] == []
    r = rows["llama2-7b"]
    assert (r["family"], r["layers"], r["hidden"], r["heads"]) == ("llama", 32, 4096, 32)
    assert r["parameters"] == models.spec("llama2-7b").param_count()


def test_search_prints_its_prediction_once_and_the_plan_records_the_model(tmp_path, capsys):
    out_file = tmp_path / "p.json"
    assert main(["search", "--model", "gpt2-debug", "--gpus-per-node", "2", "--hardware-preset", "cpu-gloo",
                 "--global-batch-size", "4", "--seq-len", "64", "--out", str(out_file)]) == 0
    out = capsys.readouterr().out
    searched = out.split("best uniform plan")[0]
    assert sum(line.startswith("predicted") for line in searched.splitlines()) == 1, searched
    assert Plan.load(out_file).model == {"name": "gpt2-debug", "overrides": {}, "seq_len": 64}
    # visualize needs no --model (nor --seq-len) for it
    assert main(["visualize", str(out_file), "--hardware-preset", "cpu-gloo", "--out", str(tmp_path / "r.html"),
                 "--no-baseline"]) == 0
    assert "sequence length 64 (recorded in the plan)" in capsys.readouterr().out


def test_an_alias_is_accepted_and_the_plan_records_the_flavour_name(tmp_path, capsys):
    out_file = tmp_path / "p.json"
    assert main(["search", "--model", "gpt2", "--gpus-per-node", "2", "--hardware-preset", "cpu-gloo",
                 "--global-batch-size", "4", "--seq-len", "64", "--out", str(out_file)]) == 0
    assert Plan.load(out_file).model == {"name": "gpt2-small", "overrides": {}, "seq_len": 64}


def test_visualize_says_which_sequence_length_it_assumed(tmp_path, capsys):
    plan = Plan.uniform(8, 32, global_batch_size=8)
    plan.save(tmp_path / "p.json")
    assert main(["visualize", str(tmp_path / "p.json"), "--model", "llama2-7b", "--no-baseline",
                 "--out", str(tmp_path / "r.html")]) == 0
    assert "sequence length 4096 (the model's default; pass --seq-len" in capsys.readouterr().out
    assert main(["visualize", str(tmp_path / "p.json"), "--no-baseline", "--out", str(tmp_path / "r.html")]) == 2
    assert "this plan does not record its model" in capsys.readouterr().err


def test_a_plan_model_record_is_validated():
    with pytest.raises(ValueError, match="model: unknown keys"):
        Plan(world_size=1, layers=(LayerStrategy(),), model={"name": "x", "layers": 3}).validate()
    with pytest.raises(ValueError, match="model must be null or an object"):
        Plan(world_size=1, layers=(LayerStrategy(),), model={"overrides": {}}).validate()


# ------------------------------------------------------------------ 10. Galvatron-2 profiles
GALVATRON2_DIR = os.path.join(os.path.dirname(EXAMPLE_PLAN), "..", "galvatron2_profiles")


def test_the_shipped_galvatron2_profiles_search_with_the_layout_read_from_the_file_names(tmp_path, capsys):
    argv = ["search", "--galvatron-profiles", GALVATRON2_DIR, "--model", "llama2-7b", "--num-layers", "32",
            "--num-heads", "32", "--hidden-size", "4096", "--seq-len", "2048", "--memory-gb", "36",
            "--global-batch-size", "64", "--out", str(tmp_path / "p.json")]
    assert main(argv) == 0
    assert "on 1x8 galvatron-1x8" in capsys.readouterr().out  # from *_1nodes_8gpus_per_node.json
    assert Plan.load(tmp_path / "p.json").world_size == 8


def test_a_missing_or_ambiguous_galvatron2_directory_says_so(tmp_path, capsys):
    assert main(["search", "--galvatron-profiles", str(tmp_path / "nowhere"), "--model", "llama2-7b"]) == 2
    assert "no such directory" in capsys.readouterr().err
    for name in ("allreduce_bandwidth_1nodes_8gpus_per_node.json", "allreduce_bandwidth_2nodes_8gpus_per_node.json"):
        (tmp_path / name).write_text("{}")
    assert main(["search", "--galvatron-profiles", str(tmp_path), "--model", "llama2-7b"]) == 2
    assert "1nodes_8gpus_per_node, 2nodes_8gpus_per_node" in capsys.readouterr().err


def test_the_job_measures_a_model_once_per_machine_model_seq_dtype_and_process_count(tmp_path, monkeypatch,
                                                                                     capsys):
    """Item 2/8: the cache is keyed by what the profile depends on (here: the measurement is
    replaced by the analytic profile, counted), not kept per run directory."""
    import galvatron.profiler.model as PM
    from galvatron.training.job import model_profile_for

    calls = []

    def fake_profile_model(name, seq_len=None, precision="bf16", opts=None, **overrides):
        calls.append((name, seq_len, precision))
        hw = galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=2)
        return galvatron.model_profile(name, seq_len=seq_len, hardware=hw, precision=precision, **overrides)

    monkeypatch.setattr(PM, "profile_model", fake_profile_model)
    monkeypatch.setattr("galvatron.training.job.torch.cuda.is_available", lambda: False)

    def profile(run, **flags):
        cfg = build_config(None, {"run_dir": str(tmp_path / run), "model.seq_len": 64, **flags})
        os.makedirs(cfg.run_dir, exist_ok=True)
        return model_profile_for(cfg, None, world=2)

    a = profile("a")
    b = profile("b")  # another run directory, same inputs: no new measurement
    assert len(calls) == 1 and a.to_dict() == b.to_dict()
    assert os.path.exists(tmp_path / "b" / "model_profile.json")  # the run's record
    assert profile("c", **{"model.dtype": "bf16"}).precision == "bf16"
    assert profile("d", **{"model.name": "llama-debug"}).model == "llama-debug"
    assert profile("e", **{"model.seq_len": 32}).seq_len == 32
    assert len(calls) == 4
    assert "measured gpt2-mini on this machine (seq 64, fp32, 2 processes); cached as" in capsys.readouterr().out


def test_a_re_searched_plan_says_whether_it_changed(tmp_path):
    from galvatron.training.job import _previous_plan_note

    path = tmp_path / "plan.json"
    assert _previous_plan_note(str(path), _plan(), "search on x") == ""
    _plan().save(path)
    assert _previous_plan_note(str(path), _plan().replace(predicted={"step_time_s": 1.0}), "search on x") == \
        "; re-searched: the same plan as the run's previous plan.json"
    assert "re-searched: differs from" in _previous_plan_note(str(path), _plan(tp=2), "search on x")
