"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP) that never look complete when
they are not, are verified by checksums before they are used, and never unpickle anything.

Layout of ``RUN/checkpoints``::

    step_00000100/            a complete checkpoint
      *.distcp                DCP data files (every rank writes its shards)
      .metadata               DCP's own index (a pickle): written by DCP, never read by us
      tensors.json            our index of the same data: per tensor dtype, shape, chunks, file ranges
      train_state.json        step, RNG states, tensor layout, plan (JSON only)
      COMMIT                  written last: format version, step, size + SHA-256 of every file
    step_00000200.partial/    an interrupted save: ignored, removed by the next save

A save writes into ``step_N.partial``; every rank hashes a share of the files (streamed SHA-256),
rank 0 writes ``COMMIT`` and renames the directory; only then are checkpoints beyond the last
``keep`` deleted. A failed save (e.g. a full disk) removes its partial directory and raises one
``ValueError`` on every rank; earlier checkpoints are never touched.

Loading takes the newest checkpoint whose files all match ``COMMIT`` (the ranks share the
hashing), skipping with a warning any that does not, and raises a ``ValueError`` naming what was
found when none is intact. DCP's ``.metadata`` is a pickle and a hostile one can make DCP call
``torch.load(weights_only=False)`` on attacker bytes, so it is not read at all: the DCP metadata
is rebuilt from ``tensors.json`` (validated: plain file names, in-bounds ranges, known dtypes,
tensors only) and a load planner that refuses byte entries reads the data. Tensor data itself is
read by DCP with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException

FORMAT = "galvatron-checkpoint"
VERSION = 2
MANIFEST = "tensors.json"
TRAIN_STATE = "train_state.json"
_STEP_RE = re.compile(r"^step_(\d{8})$")
_DATA_FILE_RE = re.compile(r"^__\d+_\d+\.distcp$")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16, "int64": torch.int64}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_DIMS = 8


# ------------------------------------------------------------------------------ checksums
def sha256_file(path: str, block: int = 1 << 20) -> str:
    """Streamed SHA-256 of a file (constant memory; hashlib releases the GIL on large blocks)."""
    h = hashlib.sha256()
    buf = bytearray(block)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


class _Group:
    """The ranks a checkpoint is saved/verified by: the default process group when it is
    initialised (and ``collective``), else this process alone."""

    def __init__(self, collective: bool | None, barrier: Callable[[], None] | None, rank: int):
        on = dist.is_available() and dist.is_initialized()
        self.on = on if collective is None else (collective and on)
        self.rank = dist.get_rank() if self.on else rank
        self.world = dist.get_world_size() if self.on else 1
        self._barrier = barrier if barrier is not None else (dist.barrier if self.on else (lambda: None))

    def barrier(self) -> None:
        self._barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        if not self.on or self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def first_error(self, err: str | None) -> str | None:
        """The first rank's error message, on every rank (None when no rank failed)."""
        return next((e for e in self.all_gather(err) if e), None)


# ------------------------------------------------------------------------------ the manifest
def manifest_from_metadata(md: Any) -> dict[str, Any]:
    """Our JSON index of what DCP wrote (tensors only; anything else is an internal error)."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    by_fqn: dict[str, list] = {}
    for index, info in md.storage_data.items():
        if getattr(info, "transform_descriptors", None):
            raise AssertionError(f"checkpoint: unexpected storage transforms for {index.fqn}")
        by_fqn.setdefault(index.fqn, []).append((list(index.offset), info))
    tensors = {}
    for fqn, entry in md.state_dict_metadata.items():
        if type(entry) is not TensorStorageMetadata:
            raise AssertionError(f"checkpoint: {fqn} is not a tensor ({type(entry).__name__})")
        infos = {tuple(off): info for off, info in by_fqn.get(fqn, [])}
        chunks = []
        for c in entry.chunks:
            info = infos[tuple(c.offsets)]
            chunks.append({"offsets": list(c.offsets), "sizes": list(c.sizes), "file": info.relative_path,
                           "offset": int(info.offset), "length": int(info.length)})
        tensors[fqn] = {"dtype": _DTYPE_NAMES[entry.properties.dtype], "shape": list(entry.size), "chunks": chunks}
    return {"version": 1, "tensors": tensors}


def _ints(value: Any, where: str, n: int | None = None, lo: int = 0) -> list[int]:
    if (not isinstance(value, list) or len(value) > _MAX_DIMS or (n is not None and len(value) != n)
            or any(type(v) is not int or v < lo for v in value)):
        want = f"{n} " if n is not None else ""
        raise ValueError(f"{where}: expected a list of {want}integers >= {lo}, got {value!r:.80}")
    return value


def check_manifest(manifest: Any, file_bytes: dict[str, int], where: str) -> dict[str, dict[str, Any]]:
    """Validate ``tensors.json`` against the files of the checkpoint: every entry a tensor of a
    known dtype, chunks inside the tensor, data ranges inside data files listed in COMMIT."""
    if not isinstance(manifest, dict) or manifest.get("version") != 1 or not isinstance(manifest.get("tensors"), dict):
        raise ValueError(f"{where}: not a version-1 tensor index")
    for fqn, t in manifest["tensors"].items():
        w = f"{where}: tensor {fqn!r}"
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "chunks"}:
            raise ValueError(f"{w}: expected exactly the fields dtype, shape, chunks (a tensor; "
                             "byte entries are never written and not accepted)")
        if t["dtype"] not in DTYPES:
            raise ValueError(f"{w}: dtype {t['dtype']!r} is not accepted; accepted: {', '.join(DTYPES)}")
        shape = _ints(t["shape"], f"{w}.shape")
        if not isinstance(t["chunks"], list) or not t["chunks"]:
            raise ValueError(f"{w}.chunks: expected a non-empty list")
        item = DTYPES[t["dtype"]].itemsize
        covered = 0
        for i, c in enumerate(t["chunks"]):
            cw = f"{w}.chunks[{i}]"
            if not isinstance(c, dict) or set(c) != {"offsets", "sizes", "file", "offset", "length"}:
                raise ValueError(f"{cw}: expected the fields offsets, sizes, file, offset, length")
            offs = _ints(c["offsets"], f"{cw}.offsets", len(shape))
            sizes = _ints(c["sizes"], f"{cw}.sizes", len(shape))
            if any(o + s > d for o, s, d in zip(offs, sizes, shape, strict=True)):
                raise ValueError(f"{cw}: the chunk lies outside the tensor's shape {shape}")
            name = c["file"]
            if not isinstance(name, str) or not _DATA_FILE_RE.match(name) or name not in file_bytes:
                raise ValueError(f"{cw}.file: {name!r:.80} is not a data file of this checkpoint")
            start, length = _ints([c["offset"], c["length"]], f"{cw}.offset/length")
            if start + length > file_bytes[name] or length < math.prod(sizes) * item:
                raise ValueError(f"{cw}: the byte range {start}+{length} does not fit {name} "
                                 f"({file_bytes[name]} bytes) or the chunk's values")
            covered += math.prod(sizes)
        if covered != math.prod(shape):
            raise ValueError(f"{w}: its chunks hold {covered} values, its shape {shape} {math.prod(shape)}")
    return manifest["tensors"]


def metadata_from_manifest(tensors: dict[str, dict[str, Any]]) -> Any:
    """DCP ``Metadata`` built from a validated manifest: tensor entries only."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata,
        Metadata,
        MetadataIndex,
        StorageMeta,
        TensorProperties,
        TensorStorageMetadata,
    )

    sd, storage = {}, {}
    for fqn, t in tensors.items():
        chunks = []
        for i, c in enumerate(t["chunks"]):
            chunks.append(ChunkStorageMetadata(offsets=torch.Size(c["offsets"]), sizes=torch.Size(c["sizes"])))
            storage[MetadataIndex(fqn, torch.Size(c["offsets"]), i)] = _StorageInfo(c["file"], c["offset"], c["length"])
        sd[fqn] = TensorStorageMetadata(TensorProperties(dtype=DTYPES[t["dtype"]]), torch.Size(t["shape"]), chunks)
    return Metadata(state_dict_metadata=sd, storage_data=storage, storage_meta=StorageMeta())


class ManifestReader(FileSystemReader):
    """DCP reader whose metadata comes from the validated ``tensors.json`` (``.metadata``, a
    pickle, is never opened)."""

    def __init__(self, path: str, tensors: dict[str, dict[str, Any]]):
        super().__init__(path)
        self._metadata = metadata_from_manifest(tensors)

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002 - DCP's signature
        self._metadata.storage_meta.load_id = self.load_id
        return self._metadata


class TensorsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner without its one unsafe path: byte entries (``torch.load`` with
    ``weights_only=False``) are refused."""

    def load_bytes(self, read_item: Any, value: Any) -> None:  # noqa: ARG002
        raise ValueError(f"checkpoint entry {read_item.dest_index.fqn!r} is a byte (pickle) entry; "
                         "only tensors are loaded")


# ------------------------------------------------------------------------------ the manager
def _disk_message(e: BaseException) -> str:
    """What went wrong inside ``e`` (DCP wraps each rank's exception in a CheckpointException)
    as one line: an OSError's reason (a full disk named as such), else the first failure."""
    seen: list[BaseException] = []
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict):
        seen += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
    seen.append(e)
    for x in list(seen):
        if x.__cause__ is not None or x.__context__ is not None:
            seen.append(x.__cause__ or x.__context__)
    for x in seen:
        if isinstance(x, OSError):
            return "no space left on device" if x.errno == errno.ENOSPC else (x.strerror or str(x))
    first = seen[0]
    text = str(first).splitlines()[0] if str(first) else ""
    return text if isinstance(first, ValueError) else f"{type(first).__name__}: {text}"


class CheckpointManager:
    """Saves and finds checkpoints under ``run_dir/checkpoints``.

    Collective when a process group is initialised (every rank calls ``save``/``latest``
    together; pass ``collective=False`` to inspect a run directory from one process).
    ``barrier`` overrides the group's barrier; ``rank`` is used only without a process group;
    ``warn`` reports a skipped checkpoint (default: ``warnings.warn``)."""

    def __init__(self, run_dir: str, keep: int = 2, rank: int = 0, barrier: Callable[[], None] | None = None,
                 collective: bool | None = None, warn: Callable[[str], None] | None = None):
        self.root = os.path.join(run_dir, "checkpoints")
        self.warn = warn or (lambda msg: warnings.warn(msg, stacklevel=4))
        self.keep = keep
        self.group = _Group(collective, barrier, rank)
        self.rank = self.group.rank

    def path(self, step: int) -> str:
        return os.path.join(self.root, f"step_{step:08d}")

    # ---------------------------------------------------------------- save
    def save(self, step: int, state: dict[str, Any], train_state: dict[str, Any]) -> str:
        """Collective: every rank calls it with its own shards in `state` (tensors or DTensors).
        Raises ValueError on every rank (partial directory removed) when the save fails."""
        final, partial = self.path(step), self.path(step) + ".partial"
        g = self.group
        err = None
        if g.rank == 0:
            err = self._try(lambda: self._fresh_dir(partial))
        self._check(step, g.first_error(err), partial)
        md = None
        try:
            md = dcp.save(state, storage_writer=FileSystemWriter(partial))
        except (Exception, CheckpointException) as e:  # DCP wraps a rank's OSError in its own exception
            err = _disk_message(e)
        self._check(step, g.first_error(err), partial)
        if g.rank == 0:
            err = self._try(lambda: self._write_json(partial, train_state, manifest_from_metadata(md)))
        self._check(step, g.first_error(err), partial)
        mine: dict[str, Any] = {}  # this rank's share of the files: size and SHA-256
        err = self._try(lambda: mine.update(
            {n: {"bytes": os.path.getsize(os.path.join(partial, n)), "sha256": sha256_file(os.path.join(partial, n))}
             for n in sorted(os.listdir(partial))[g.rank::g.world]}))
        shares = g.all_gather((err, mine))
        self._check(step, next((e for e, _ in shares if e), None), partial)
        if g.rank == 0:
            files = {k: v for _, share in shares for k, v in share.items()}
            commit = {"format": FORMAT, "version": VERSION, "step": step, "files": dict(sorted(files.items()))}
            err = self._try(lambda: self._commit(partial, final, commit))
        self._check(step, g.first_error(err), partial)
        return final

    @staticmethod
    def _try(fn: Callable[[], Any]) -> str | None:
        try:
            fn()
        except OSError as e:
            return _disk_message(e)
        return None

    def _check(self, step: int, err: str | None, partial: str) -> None:
        if err is None:
            return
        if self.group.rank == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise ValueError(f"cannot write the checkpoint of step {step} under {self.root}: {err}; "
                         "the partial checkpoint was removed, earlier checkpoints are intact")

    def _fresh_dir(self, partial: str) -> None:
        os.makedirs(self.root, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)

    @staticmethod
    def _write_json(partial: str, train_state: dict[str, Any], manifest: dict[str, Any]) -> None:
        for name, obj in ((TRAIN_STATE, train_state), (MANIFEST, manifest)):
            with open(os.path.join(partial, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, allow_nan=False)
                f.flush()
                os.fsync(f.fileno())

    def _commit(self, partial: str, final: str, commit: dict[str, Any]) -> None:
        with open(os.path.join(partial, "COMMIT"), "w", encoding="utf-8") as f:
            json.dump(commit, f)
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        _fsync_dir(self.root)
        self._prune()

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

    # ---------------------------------------------------------------- find and verify
    @staticmethod
    def inspect(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Cheap structural check (no data hashed): the COMMIT, every listed file present with its
        size, the small JSON files matching their checksums. Returns (train_state, tensors);
        raises ValueError naming what is wrong."""
        try:
            with open(os.path.join(path, "COMMIT"), encoding="utf-8") as f:
                commit = json.load(f)
        except FileNotFoundError:
            raise ValueError("no COMMIT (an interrupted save)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"COMMIT is unreadable ({e})") from None
        if not isinstance(commit, dict) or commit.get("format") != FORMAT or commit.get("version") != VERSION:
            raise ValueError(f"COMMIT is not a {FORMAT} version {VERSION} (written by an older version "
                             "without checksums, or damaged)")
        files = commit.get("files")
        if not isinstance(files, dict) or not {MANIFEST, TRAIN_STATE} <= set(files):
            raise ValueError("COMMIT lists no files")
        for name, rec in files.items():
            if (not isinstance(name, str) or os.path.basename(name) != name or name in ("", ".", "..")
                    or not isinstance(rec, dict) or type(rec.get("bytes")) is not int
                    or not isinstance(rec.get("sha256"), str)):
                raise ValueError(f"COMMIT: bad file entry {name!r:.80}")
            try:
                size = os.path.getsize(os.path.join(path, name))
            except OSError:
                raise ValueError(f"{name} is missing") from None
            if size != rec["bytes"]:
                raise ValueError(f"{name} has {size} bytes, COMMIT says {rec['bytes']}")
        small = {}
        for name in (TRAIN_STATE, MANIFEST):
            full = os.path.join(path, name)
            if sha256_file(full) != files[name]["sha256"]:
                raise ValueError(f"{name} does not match its checksum")
            try:
                with open(full, encoding="utf-8") as f:
                    small[name] = json.loads(f.read(), parse_constant=_no_constant)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise ValueError(f"{name} is not valid JSON ({e})") from None
        ts = small[TRAIN_STATE]
        if not isinstance(ts, dict) or type(ts.get("step")) is not int or ts["step"] < 0:
            raise ValueError(f"{TRAIN_STATE}: 'step' must be an integer >= 0")
        if not isinstance(ts.get("plan", {}), dict) or not isinstance(ts.get("plan_summary", ""), str):
            raise ValueError(f"{TRAIN_STATE}: 'plan' must be a mapping and 'plan_summary' a string")
        if ts["step"] != commit.get("step"):
            raise ValueError(f"{TRAIN_STATE} says step {ts['step']}, COMMIT says {commit.get('step')}")
        data_bytes = {n: r["bytes"] for n, r in files.items() if _DATA_FILE_RE.match(n)}
        tensors = check_manifest(small[MANIFEST], data_bytes, f"{path}/{MANIFEST}")
        return ts, tensors

    def _hash_share(self, path: str) -> str | None:
        """This rank's share of the data files hashed; an error message or None."""
        with open(os.path.join(path, "COMMIT"), encoding="utf-8") as f:
            files = json.load(f)["files"]
        g = self.group
        for name in sorted(files)[g.rank::g.world]:
            try:
                if sha256_file(os.path.join(path, name)) != files[name]["sha256"]:
                    return f"{name} does not match its checksum"
            except OSError as e:
                return f"{name}: {e.strerror or e}"
        return None

    def verify(self, path: str) -> tuple[dict[str, Any], dict[str, Any]] | str:
        """Collective: (train_state, tensors) of an intact checkpoint, or why it is not."""
        try:
            found = self.inspect(path)
            err = None
        except ValueError as e:
            found, err = None, str(e)
        if self.group.first_error(err) is None:  # every rank's structure is fine: hash the data
            err = self._hash_share(path)
        err = self.group.first_error(err)
        return err if err is not None or found is None else found

    def latest(self) -> tuple[str, dict[str, Any]] | None:
        """Collective: the newest intact checkpoint (path, train_state), skipping damaged ones with
        a warning that names them; None when there is none (see :meth:`resume_point`)."""
        found = self.resume_point(required=False)
        return None if found is None else (found[0], found[1])

    def resume_point(self, required: bool = True) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """Collective: (path, train_state, tensors) of the newest intact checkpoint. Damaged ones
        are skipped with a warning; with ``required`` a ValueError names everything that was
        found when none is intact."""
        skipped = []
        for step in reversed(self._steps()):
            path = self.path(step)
            result = self.verify(path)
            if not isinstance(result, str):
                return path, result[0], result[1]
            skipped.append(f"{os.path.basename(path)}: {result}")
            if self.group.rank == 0:
                self.warn(f"skipping checkpoint {path}: damaged or incomplete ({result})")
        if not required:
            return None
        raise self._none_intact(skipped)

    def resume_candidate(self) -> str:
        """One process, cheap (no data hashed): the newest checkpoint whose COMMIT, file sizes and
        JSON files are in order; a ValueError naming everything found when there is none."""
        skipped = []
        for step in reversed(self._steps()):
            try:
                self.inspect(self.path(step))
                return self.path(step)
            except ValueError as e:
                skipped.append(f"step_{step:08d}: {e}")
        raise self._none_intact(skipped)

    def _none_intact(self, skipped: list[str]) -> ValueError:
        partial = sorted(n for n in os.listdir(self.root) if n.endswith(".partial")) if os.path.isdir(self.root) else []
        what = "; ".join(skipped + [f"{n}: an interrupted save" for n in partial]) or "no checkpoints at all"
        return ValueError(f"--resume: no intact checkpoint under {self.root} ({what}); nothing was changed")

    # ---------------------------------------------------------------- load
    @staticmethod
    def load(path: str, state: dict[str, Any], tensors: dict[str, dict[str, Any]] | None = None) -> None:
        """Collective: fills `state` (flat or nested dict of tensors) in place from `path`. Every
        requested entry is checked against the checkpoint's index (present, same shape and dtype)
        before any data is read."""
        if tensors is None:
            tensors = CheckpointManager.inspect(path)[1]
        _match(state, tensors, path)
        try:
            dcp.load(state, storage_reader=ManifestReader(path, tensors), planner=TensorsOnlyLoadPlanner())
        except (Exception, CheckpointException) as e:
            raise ValueError(f"{path}: cannot load the checkpoint: {_disk_message(e)}") from None


def _match(state: dict[str, Any], tensors: dict[str, dict[str, Any]], path: str, prefix: str = "") -> None:
    for key, value in state.items():
        fqn = f"{prefix}{key}"
        if isinstance(value, dict):
            _match(value, tensors, path, f"{fqn}.")
            continue
        t = tensors.get(fqn)
        if t is None:
            raise ValueError(f"{path}: the checkpoint has no tensor {fqn!r}")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: {fqn!r} is not a tensor in the state to load")
        if list(value.shape) != t["shape"] or DTYPES[t["dtype"]] != value.dtype:
            raise ValueError(f"{path}: tensor {fqn!r} is {t['dtype']} {t['shape']} in the checkpoint, "
                             f"{_DTYPE_NAMES.get(value.dtype, value.dtype)} {list(value.shape)} expected")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ RNG
def rng_state() -> dict[str, Any]:
    """Torch and numpy RNG states as JSON-compatible lists."""
    import numpy as np

    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state().tolist(),
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}


def check_rng_state(state: Any, where: str) -> None:
    """Validate a saved RNG state (shapes and ranges) before it is applied."""
    n_torch = torch.get_rng_state().numel()
    if not isinstance(state, dict) or set(state) != {"torch", "numpy"}:
        raise ValueError(f"{where}: 'rng' must have exactly the fields torch, numpy")
    t = state["torch"]
    if not isinstance(t, list) or len(t) != n_torch or any(type(v) is not int or not 0 <= v < 256 for v in t):
        raise ValueError(f"{where}: rng.torch must be {n_torch} integers in [0, 255]")
    n = state["numpy"]
    if (not isinstance(n, list) or len(n) != 5 or n[0] != "MT19937" or not isinstance(n[1], list) or len(n[1]) != 624
            or any(type(v) is not int or not 0 <= v < 2**32 for v in n[1]) or type(n[2]) is not int
            or not 0 <= n[2] <= 624 or type(n[3]) is not int or not isinstance(n[4], (int, float))):
        raise ValueError(f"{where}: rng.numpy must be ['MT19937', 624 uint32 values, pos, has_gauss, gauss]")


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
