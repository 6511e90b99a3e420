"""Hostile and damaged checkpoint files, one process: a planted pickle never runs, flipped bytes
are found and the damaged checkpoint is named and skipped, a full disk leaves no partial
directory, and the layout/RNG state are validated before anything is read."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from galvatron.training.checkpoint import CheckpointManager, rng_state
from tests.security.attacks import _Marker, flip_bytes, plant_pickle_payload, recompute_commit


def job_like_state(value: float) -> dict[str, torch.Tensor]:
    """Keys as the job saves them (``rank{r}/param/{j}``, AdamW moments)."""
    return {"rank0/param/0": torch.full((4, 8), value), "rank0/param/1": torch.full((8,), value),
            "rank0/adamw/0/exp_avg": torch.full((4, 8), value / 10), "rank0/adamw/0/step": torch.tensor([value])}


def empty_like_state() -> dict[str, torch.Tensor]:
    return {k: torch.zeros_like(v) for k, v in job_like_state(0.0).items()}


def test_a_planted_pickle_payload_never_runs_and_the_saved_tensors_load(tmp_path):
    mgr = CheckpointManager(str(tmp_path / "run"), keep=3)
    path = mgr.save(3, job_like_state(3.0), {"step": 3, "rng": rng_state()})
    marker = tmp_path / "PWNED"
    assert plant_pickle_payload(path, str(marker)) == ["rank0/param/0"]
    found, _ = mgr.latest()  # every checksum matches: the attacker recomputed COMMIT
    target = empty_like_state()
    try:
        CheckpointManager.load(found, target)
    except ValueError:
        pass  # refusing is fine too; running the payload is not
    assert not marker.exists(), "the checkpoint ran code"
    assert torch.equal(target["rank0/param/0"], torch.full((4, 8), 3.0))  # .metadata is not what is read


def test_a_tensor_index_pointing_at_a_pickle_is_refused_without_running_it(tmp_path):
    mgr = CheckpointManager(str(tmp_path / "run"))
    path = mgr.save(1, job_like_state(1.0), {"step": 1})
    marker = tmp_path / "PWNED"
    with open(os.path.join(path, "__7_0.distcp"), "wb") as f:  # a name like DCP's own
        torch.save(_Marker(str(marker)), f)
    with open(os.path.join(path, "tensors.json")) as f:
        index = json.load(f)
    size = os.path.getsize(os.path.join(path, "__7_0.distcp"))
    index["tensors"]["rank0/param/1"]["chunks"][0].update(file="__7_0.distcp", offset=0, length=size)
    with open(os.path.join(path, "tensors.json"), "w") as f:
        json.dump(index, f)
    recompute_commit(path)
    with pytest.raises(ValueError, match="cannot load the checkpoint"):
        CheckpointManager.load(mgr.latest()[0], empty_like_state())
    assert not marker.exists()


@pytest.mark.parametrize("change", [
    lambda t: t["rank0/param/0"].update(kind="bytes"),  # a byte entry
    lambda t: t["rank0/param/0"].update(dtype="object"),
    lambda t: t["rank0/param/0"]["chunks"][0].update(file="../../etc/passwd"),
    lambda t: t["rank0/param/0"]["chunks"][0].update(offset=10**12),
    lambda t: t["rank0/param/0"].update(shape=[10**6, 10**6]),  # a memory bomb
], ids=["bytes-entry", "dtype", "path", "range", "shape"])
def test_a_tampered_tensor_index_is_refused(tmp_path, change):
    mgr = CheckpointManager(str(tmp_path / "run"))
    path = mgr.save(1, job_like_state(1.0), {"step": 1})
    with open(os.path.join(path, "tensors.json")) as f:
        index = json.load(f)
    change(index["tensors"])
    with open(os.path.join(path, "tensors.json"), "w") as f:
        json.dump(index, f)
    recompute_commit(path)
    with pytest.warns(UserWarning, match="skipping checkpoint .*step_00000001.*tensors.json"):
        assert mgr.latest() is None
    with pytest.raises(ValueError, match="no intact checkpoint .*step_00000001: .*tensors.json"):
        mgr.resume_point()


def test_flipped_bytes_in_a_shard_are_found_named_and_skipped_then_refused(tmp_path):
    mgr = CheckpointManager(str(tmp_path / "run"), keep=3)
    for step in (1, 2):
        mgr.save(step, job_like_state(float(step)), {"step": step})
    shard = next(n for n in sorted(os.listdir(mgr.path(2))) if n.endswith(".distcp"))
    flip_bytes(os.path.join(mgr.path(2), shard))  # same size: the old size check saw nothing
    with pytest.warns(UserWarning, match=f"skipping checkpoint .*step_00000002.*{shard} does not match its checksum"):
        path, ts = mgr.latest()
    assert ts["step"] == 1 and path == mgr.path(1)
    target = empty_like_state()
    CheckpointManager.load(path, target)
    assert torch.equal(target["rank0/param/0"], torch.full((4, 8), 1.0))
    flip_bytes(os.path.join(mgr.path(1), shard))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no intact checkpoint.*step_00000002.*step_00000001"):
        mgr.resume_point()


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["shard", "train_state"])
def test_a_full_disk_during_a_save_leaves_earlier_checkpoints_and_no_partial_dir(tmp_path, monkeypatch, where):
    from torch.distributed.checkpoint import filesystem

    mgr = CheckpointManager(str(tmp_path / "run"), keep=2)
    mgr.save(1, job_like_state(1.0), {"step": 1})
    before = {n: os.path.getsize(os.path.join(mgr.path(1), n)) for n in os.listdir(mgr.path(1))}
    if where == "shard":
        real = filesystem._write_item

        def half_then_full(transforms, stream, *args, **kwargs):
            stream.write(b"\0" * 100)  # part of the data made it to disk
            _enospc()

        monkeypatch.setattr(filesystem, "_write_item", half_then_full)
        assert real is not half_then_full
    else:
        import galvatron.training.checkpoint as C

        monkeypatch.setattr(C.json, "dump", _enospc)
    with pytest.raises(ValueError, match="checkpoint of step 2 .*no space left on device.*earlier checkpoints are intact"):
        mgr.save(2, job_like_state(2.0), {"step": 2})
    monkeypatch.undo()
    assert sorted(os.listdir(mgr.root)) == ["step_00000001"]  # no .partial left filling the disk
    assert {n: os.path.getsize(os.path.join(mgr.path(1), n)) for n in os.listdir(mgr.path(1))} == before
    assert mgr.latest()[1]["step"] == 1


SHAPES = {"w": (4, 8), "b": (8,)}


def _layout(**segments):
    keys = {"rank0/param/0": [["w", "param", None, [4, 8], 0, 32, 0]],
            "rank0/param/1": [["b", "param", None, [8], 0, 8, 0]]}
    keys.update(segments)
    return {"version": 1, "shapes": {k: list(v) for k, v in SHAPES.items()}, "keys": keys}


TENSORS = {"rank0/param/0": {"dtype": "float32", "shape": [4, 8], "chunks": []},
           "rank0/param/1": {"dtype": "float32", "shape": [8], "chunks": []}}


def validate_layout(*args):
    from galvatron.parallel.state import validate_layout

    return validate_layout(*args)


def test_a_valid_layout_passes():
    keys, shapes = validate_layout(_layout(), TENSORS, SHAPES, "ts")
    assert shapes == SHAPES and keys["rank0/param/0"][0].b == 32


@pytest.mark.parametrize("segments, message", [
    ({"rank0/param/0": [["w", "param", None, [4, 8], 0, 64, 0]]}, "outside the tensor"),
    ({"rank0/param/0": [["w", "param", None, [4, 8], 0, 32, 5]]}, "outside the tensor"),
    ({"rank0/param/0": [["w", "pickle", None, [4, 8], 0, 32, 0]]}, "kind"),
    ({"rank0/param/0": [["zz", "param", None, [4, 8], 0, 32, 0]]}, "not in the layout's shapes"),
    ({"rank0/param/0": [["w", "param", [0, 2, 3], [4, 8], 0, 32, 0]]}, "does not fit"),
    ({"rank0/param/0": [["w", "param", None, [4, 8], -1, 32, 0]]}, "integers >= 0"),
    ({"rank0/param/0": [["w", "param", None, [4, 8], 0, "32", 0]]}, "integers >= 0"),
    ({"rank0/param/0": "w"}, "non-empty list"),
    ({"rank9/param/0": [["b", "param", None, [8], 0, 8, 0]]}, "not a tensor of the checkpoint"),
], ids=["past-end", "offset", "kind", "name", "slice", "negative", "string", "not-list", "unknown-key"])
def test_a_tampered_layout_is_refused_before_any_read(segments, message):
    with pytest.raises(ValueError, match=message):
        validate_layout(_layout(**segments), TENSORS, SHAPES, "ts")


def test_a_layout_key_saved_with_a_non_floating_dtype_is_refused():
    tensors = dict(TENSORS, **{"rank0/param/1": {"dtype": "int64", "shape": [8], "chunks": []}})
    with pytest.raises(ValueError, match="saved as int64; a floating dtype is expected"):
        validate_layout(_layout(), tensors, SHAPES, "ts")


def test_a_layout_of_another_model_names_the_parameter():
    with pytest.raises(ValueError, match="parameter 'w' has shape"):
        validate_layout(_layout(), TENSORS, {"w": (8, 4), "b": (8,)}, "ts")
    with pytest.raises(ValueError, match="no version-1 tensor layout"):
        validate_layout(None, TENSORS, SHAPES, "ts")


def test_rng_state_is_validated_before_it_is_applied():
    from galvatron.training.checkpoint import check_rng_state

    good = rng_state()
    check_rng_state(good, "ts")
    for bad in ({"torch": good["torch"][:-1], "numpy": good["numpy"]},
                {"torch": good["torch"], "numpy": ["MT19937", [2**40] * 624, 0, 0, 0.0]},
                {"torch": [999] * len(good["torch"]), "numpy": good["numpy"]}, None):
        with pytest.raises(ValueError, match="rng"):
            check_rng_state(bad, "ts")
