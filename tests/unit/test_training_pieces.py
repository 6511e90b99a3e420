"""The training job's pieces on their own: config, data, checkpoints, schedule, launcher."""

import json
import os
import pickle
import time

import numpy as np
import pytest
import torch

from galvatron.training import data as D
from galvatron.training.checkpoint import (
    CheckpointManager,
    rng_state,
    set_rng_state,
)
from galvatron.training.config import build_config, parse_overrides
from galvatron.training.launch import spawn
from galvatron.training.schedule import lr_at


def test_config_file_flags_and_overrides_in_precedence_order(tmp_path):
    (tmp_path / "c.yaml").write_text("steps: 7\noptim:\n  lr: 0.01\nmodel:\n  name: llama-debug\n")
    (tmp_path / "c.toml").write_text("steps = 9\n[parallel]\npp = 2\ndp_type = 'zero3'\n")
    cfg = build_config(str(tmp_path / "c.yaml"), {"steps": 11}, ["--optim.lr", "3e-4", "--model.overrides={\"num_layers\": 2}"])
    assert cfg.steps == 11 and cfg.optim.lr == pytest.approx(3e-4) and cfg.model.name == "llama-debug"
    assert cfg.model.overrides == {"num_layers": 2}
    cfg = build_config(str(tmp_path / "c.toml"), None, ["--parallel.checkpoint", "true"])
    assert (cfg.steps, cfg.parallel.pp, cfg.parallel.dp_type, cfg.parallel.checkpoint) == (9, 2, "zero3", True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--optim.lrr", "1"], "unknown config key 'optim.lrr'; accepted in this section: lr, min_lr"),
        (["--optim.lr", "fast"], "optim.lr: expected float"),
        (["--parallel.checkpoint", "maybe"], "parallel.checkpoint: expected true or false"),
        (["--model.dtype", "int8"], "model.dtype: 'int8' is not accepted"),
        (["--steps", "3"], "unrecognised argument '--steps'"),
        (["--optim.lr"], "missing value"),
    ],
)
def test_bad_config_values_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_config(None, None, overrides)


def test_bad_config_files(tmp_path):
    with pytest.raises(ValueError, match="config file not found"):
        build_config(str(tmp_path / "none.yaml"))
    (tmp_path / "bad.yaml").write_text("steps: [1,\n")
    with pytest.raises(ValueError, match="cannot parse"):
        build_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ValueError, match="accepted: .yaml, .yml, .toml"):
        build_config(str(tmp_path / "c.ini"))
    assert parse_overrides(["--a.b=1", "--c.d", "x"]) == {"a": {"b": "1"}, "c": {"d": "x"}}


def test_builtin_data_is_deterministic_and_shifted():
    data = D.TokenData.load("builtin", seq_len=32)
    a = data.batch(5, 8, 32, seed=1)
    b = data.batch(5, 8, 32, seed=1)
    c = data.batch(6, 8, 32, seed=1)
    assert np.array_equal(a["input_ids"], b["input_ids"]) and not np.array_equal(a["input_ids"], c["input_ids"])
    assert np.array_equal(a["input_ids"][:, 1:], a["labels"][:, :-1])
    assert a["input_ids"].shape == (8, 32) and a["input_ids"].max() < D.BYTE_VOCAB
    assert D.byte_decode(D.byte_encode("héllo")) == "héllo"


def test_encoder_decoder_batches_continue_the_encoder_text():
    data = D.TokenData.load("builtin", seq_len=32)
    lm = data.batch(5, 8, 32, seed=1)
    b = data.batch(5, 8, 32, seed=1, continuation=True)
    assert b["input_ids"].shape == b["labels"].shape == (8, 32)
    starts = np.random.default_rng([1, 5, 0]).integers(0, data.train.size - 64, size=8)
    for s, ids, labels in zip(starts, b["input_ids"], b["labels"], strict=True):
        assert np.array_equal(data.train[s:s + 64], np.r_[ids, labels])  # one window of 64
    assert not np.array_equal(lm["labels"], b["labels"])
    with pytest.raises(ValueError, match="too few for windows of 64"):
        D.TokenData(train=data.train[:64], eval=data.eval, vocab_size=257).batch(0, 2, 32, 1,
                                                                              continuation=True)


def test_prepare_then_load_token_files(tmp_path):
    (tmp_path / "a.txt").write_text("hello world " * 200)
    meta = D.prepare([str(tmp_path / "a.txt")], str(tmp_path / "out"))
    assert meta["num_tokens"] == 12 * 200 + 1 and meta["dtype"] == "uint16"
    data = D.TokenData.load("tokens", str(tmp_path / "out"), seq_len=16)
    assert data.vocab_size == D.BYTE_VOCAB
    raw = np.arange(1000, dtype=np.uint32)
    raw.tofile(tmp_path / "nano.bin")
    data = D.TokenData.load("tokens", str(tmp_path / "nano.bin"), token_dtype="uint32", seq_len=16)
    assert data.train[10] == 10
    with pytest.raises(ValueError, match="not found"):
        D.TokenData.load("tokens", str(tmp_path / "missing.bin"))
    with pytest.raises(ValueError, match="too few"):
        D.TokenData.load("tokens", str(tmp_path / "nano.bin"), token_dtype="uint32", seq_len=900)
    with pytest.raises(ValueError, match="tokenizer 'spm' is not accepted"):
        D.prepare([str(tmp_path / "a.txt")], str(tmp_path / "x"), tokenizer="spm")


def test_prepare_from_hugging_face_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")  # in the test extra
    rows = [{"text": "first record", "n": 1}, {"text": "second é", "n": 2}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    meta = D.prepare([], str(tmp_path / "j"), hf_dataset=f"json:{tmp_path / 'd.jsonl'}")
    want = np.concatenate([D.byte_encode("first record"), [D.EOT], D.byte_encode("second é"), [D.EOT]])
    assert np.array_equal(np.fromfile(tmp_path / "j" / "tokens.bin", dtype=np.uint16), want)
    assert meta["sources"] == [f"hf:json:{tmp_path / 'd.jsonl'}[train].text"]
    datasets.Dataset.from_list([{"body": r["text"]} for r in rows]).save_to_disk(str(tmp_path / "saved"))
    D.prepare([], str(tmp_path / "s"), hf_dataset=str(tmp_path / "saved"), text_field="body")
    assert np.array_equal(np.fromfile(tmp_path / "s" / "tokens.bin", dtype=np.uint16), want)
    with pytest.raises(ValueError, match="no field 'body'; its fields are"):
        D.prepare([], str(tmp_path / "x"), hf_dataset=f"json:{tmp_path / 'd.jsonl'}", text_field="body")
    with pytest.raises(ValueError, match="no split 'validation'"):
        D.prepare([], str(tmp_path / "x"), hf_dataset=f"json:{tmp_path / 'd.jsonl'}", split="validation")
    with pytest.raises(ValueError, match="holds int, not text"):
        D.prepare([], str(tmp_path / "x"), hf_dataset=f"json:{tmp_path / 'd.jsonl'}", text_field="n")
    with pytest.raises(ValueError, match="give text files and/or --hf-dataset"):
        D.prepare([], str(tmp_path / "x"))


def test_image_batches_are_deterministic():
    a = D.image_batch(3, 4, 8, 3, 10, seed=0)
    b = D.image_batch(3, 4, 8, 3, 10, seed=0)
    assert a["pixel_values"].shape == (4, 3, 8, 8) and np.array_equal(a["labels"], b["labels"])


def test_lr_schedule_warms_up_then_decays():
    assert lr_at(0, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 0.1, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(55, 100, 1.0, 0.1, 10) == pytest.approx(0.55)


def state(value: float) -> dict:
    return {"model": {"w": torch.full((3, 4), value), "b": torch.arange(2, dtype=torch.bfloat16) + value}}


def test_checkpoints_round_trip_keep_the_last_k_and_ignore_partial_ones(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=2)
    for step in (10, 20, 30):
        mgr.save(step, state(step), {"step": step, "rng": rng_state()})
    names = sorted(os.listdir(tmp_path / "checkpoints"))
    assert names == ["step_00000020", "step_00000030"]
    os.makedirs(tmp_path / "checkpoints" / "step_00000040.partial")
    path, ts = mgr.latest()
    assert ts["step"] == 30 and path.endswith("step_00000030")
    target = state(0)
    CheckpointManager.load(path, target)
    assert torch.equal(target["model"]["w"], torch.full((3, 4), 30.0))
    set_rng_state(ts["rng"])


def test_a_corrupted_checkpoint_is_detected_and_skipped(tmp_path):
    mgr = CheckpointManager(str(tmp_path), keep=3)
    mgr.save(1, state(1), {"step": 1})
    mgr.save(2, state(2), {"step": 2})
    shard = next(p for p in os.listdir(mgr.path(2)) if p.endswith(".distcp"))
    with open(os.path.join(mgr.path(2), shard), "r+b") as f:
        f.truncate(10)
    with pytest.warns(UserWarning, match="skipping checkpoint .*step_00000002"):
        path, ts = mgr.latest()
    assert ts["step"] == 1
    os.remove(os.path.join(mgr.path(1), "COMMIT"))  # a half-written save never looks complete
    with pytest.warns(UserWarning):
        assert mgr.latest() is None


def test_checkpoint_loading_never_reads_the_dcp_metadata_pickle(tmp_path):
    mgr = CheckpointManager(str(tmp_path))
    path = mgr.save(1, state(1), {"step": 1})
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.warns(UserWarning, match="skipping checkpoint .*step_00000001.*.metadata has"):
        assert mgr.latest() is None
    from tests.security.attacks import recompute_commit

    recompute_commit(path)  # as an attacker would: now every checksum matches
    target = state(0)
    CheckpointManager.load(mgr.latest()[0], target)  # the index comes from tensors.json
    assert torch.equal(target["model"]["w"], torch.full((3, 4), 1.0)) and not marker.exists()


def test_unwritable_checkpoint_directory_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    mgr = CheckpointManager(str(tmp_path / "file"))
    with pytest.raises(ValueError, match="cannot write the checkpoint of step 5"):
        mgr.save(5, state(5), {"step": 5})


def test_launcher_stops_every_rank_when_one_fails(tmp_path):
    script = tmp_path / "w.py"
    script.write_text("import os, sys, time\nr = int(os.environ['RANK'])\n"
                      "if r == 1:\n    sys.exit(3)\ntime.sleep(60)\n")
    t0 = time.monotonic()
    code = spawn(2, [str(script)], str(tmp_path / "logs"), timeout_s=30)
    assert code == 3 and time.monotonic() - t0 < 15
    ok = tmp_path / "ok.py"
    ok.write_text("import os\nprint('rank', os.environ['RANK'], os.environ['WORLD_SIZE'])\n")
    assert spawn(2, [str(ok)], str(tmp_path / "logs2"), timeout_s=30) == 0
    assert "rank 1 2" in (tmp_path / "logs2" / "rank1.log").read_text()


def test_the_job_resolves_its_model_once_not_for_every_batch(monkeypatch):
    """The training loop's model facts (config, spec, first-layer length, encoder-decoder) are
    resolved once per job and passed along: drawing batches, evaluating and counting FLOPs do
    not look the model up by name again (they did, once or twice per batch)."""
    from galvatron import models
    from galvatron.training import data as D
    from galvatron.training import runtime_adapter as RA
    from galvatron.training.config import build_config

    calls = []
    real = models.get_config
    monkeypatch.setattr(models, "get_config", lambda *a, **k: calls.append(a) or real(*a, **k))
    for name, kind in (("t5-debug", "builtin"), ("vit-debug", "images")):
        cfg = build_config(None, {"model.name": name, "model.seq_len": 16})
        calls.clear()
        jm = RA.resolve_model(cfg, {})
        data = D.TokenData.load("builtin", seq_len=16) if kind == "builtin" else None
        for step in range(4):
            b = RA.batch(cfg, jm, data, step, 2)
            assert b["labels"].shape[0] == 2
        assert RA.model_flops_per_step(jm, 2) > 0
        assert len(calls) == 1, (name, calls)
        assert jm.encoder_decoder == (name == "t5-debug")
        assert jm.seq_len == (16 if kind == "builtin" else models.spec(jm.config).seq_len)
