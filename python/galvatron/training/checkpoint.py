"""Sharded checkpoints with ``torch.distributed.checkpoint`` that never look complete when they
are not, and never unpickle arbitrary objects.

Layout of ``RUN/checkpoints``::

    step_00000100/            a complete checkpoint
      .metadata, *.distcp     DCP files (every rank writes its shards)
      train_state.json        step, RNG states, data position, plan, config (JSON only)
      COMMIT                  written last (after a barrier): files, sizes, sha256 of train_state.json
    step_00000200.partial/    an interrupted save: ignored, removed by the next save

A save writes into ``step_N.partial``, then rank 0 writes ``COMMIT`` and renames the directory;
only then are checkpoints beyond the last ``keep`` deleted. Loading takes the newest directory
whose ``COMMIT`` matches its files and skips (with a warning) any that does not. DCP's metadata
file is a pickle: it is read with an unpickler that only accepts DCP's own metadata classes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter

_STEP_RE = re.compile(r"^step_(\d{8})$")
_ALLOWED = {
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("torch", "Size"),
    ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
}
_ALLOWED_MODULES = {"torch.distributed.checkpoint.metadata"}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED or module in _ALLOWED_MODULES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"checkpoint metadata refers to {module}.{name}, which is not allowed")


class SafeFileSystemReader(FileSystemReader):
    """DCP reader whose metadata loading accepts only DCP's metadata classes."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        path = os.path.join(os.fspath(self.path), ".metadata")
        with open(path, "rb") as f:
            metadata = _SafeUnpickler(io.BytesIO(f.read())).load()
        from torch.distributed.checkpoint.metadata import StorageMeta

        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class CheckpointManager:
    """Saves and finds checkpoints under ``run_dir/checkpoints``. ``barrier`` synchronises the
    ranks (a no-op in one process)."""

    def __init__(self, run_dir: str, keep: int = 2, rank: int = 0, barrier: Callable[[], None] | None = None):
        self.root = os.path.join(run_dir, "checkpoints")
        self.keep = keep
        self.rank = rank
        self.barrier = barrier or (lambda: None)

    def path(self, step: int) -> str:
        return os.path.join(self.root, f"step_{step:08d}")

    def save(self, step: int, state: dict[str, Any], train_state: dict[str, Any]) -> str:
        """Collective: every rank calls it with its own shards in `state` (tensors or DTensors)."""
        final, partial = self.path(step), self.path(step) + ".partial"
        try:
            if self.rank == 0:
                os.makedirs(self.root, exist_ok=True)
                shutil.rmtree(partial, ignore_errors=True)
                os.makedirs(partial)
            self.barrier()
            dcp.save(state, storage_writer=FileSystemWriter(partial))
            self.barrier()
            if self.rank == 0:
                ts = os.path.join(partial, "train_state.json")
                with open(ts, "w", encoding="utf-8") as f:
                    json.dump(train_state, f)
                    f.flush()
                    os.fsync(f.fileno())
                files = {n: os.path.getsize(os.path.join(partial, n)) for n in sorted(os.listdir(partial))}
                commit = {"step": step, "files": files, "train_state_sha256": _sha256(ts)}
                with open(os.path.join(partial, "COMMIT"), "w", encoding="utf-8") as f:
                    json.dump(commit, f)
                    f.flush()
                    os.fsync(f.fileno())
                shutil.rmtree(final, ignore_errors=True)
                os.replace(partial, final)
                self._prune()
            self.barrier()
        except OSError as e:
            raise ValueError(f"cannot write the checkpoint of step {step} under {self.root}: "
                             f"{e.strerror or e}; earlier checkpoints are untouched") from None
        return final

    def _prune(self) -> None:
        complete = self._steps()
        for step in complete[:-self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for name in os.listdir(self.root):
            if name.endswith(".partial"):
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)

    def _steps(self) -> list[int]:
        if not os.path.isdir(self.root):
            return []
        return sorted(int(m.group(1)) for n in os.listdir(self.root) if (m := _STEP_RE.match(n)))

    def verify(self, path: str) -> dict[str, Any] | None:
        """The train state of a complete, intact checkpoint; None (with a warning) otherwise."""
        try:
            with open(os.path.join(path, "COMMIT"), encoding="utf-8") as f:
                commit = json.load(f)
            for name, size in commit["files"].items():
                if os.path.getsize(os.path.join(path, name)) != size:
                    raise ValueError(f"{name} has the wrong size")
            ts = os.path.join(path, "train_state.json")
            if _sha256(ts) != commit["train_state_sha256"]:
                raise ValueError("train_state.json does not match its checksum")
            with open(ts, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            warnings.warn(f"skipping checkpoint {path}: incomplete or corrupted ({e})", stacklevel=2)
            return None

    def latest(self) -> tuple[str, dict[str, Any]] | None:
        for step in reversed(self._steps()):
            path = self.path(step)
            state = self.verify(path)
            if state is not None:
                return path, state
        return None

    @staticmethod
    def load(path: str, state: dict[str, Any]) -> None:
        """Collective: fills `state` (this rank's shards, any plan) in place from `path`."""
        dcp.load(state, storage_reader=SafeFileSystemReader(path))


def rng_state() -> dict[str, Any]:
    """Torch and numpy RNG states as JSON-compatible lists."""
    import numpy as np

    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state().tolist(),
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
