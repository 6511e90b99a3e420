"""Hostile and damaged checkpoints, built the way an attacker (or bad luck) would build them:
with plain ``pickle`` and torch's own classes, and the ``COMMIT`` file recomputed so that every
size and checksum the old loader checked still matches."""

from __future__ import annotations

import hashlib
import json
import os
import pickle

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    MetadataIndex,
    TensorProperties,
)


class _Marker:
    """Unpickling this creates ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def recompute_commit(ckpt: str) -> None:
    """Rewrite COMMIT so that it matches the (tampered) files, in whichever format it has."""
    path = os.path.join(ckpt, "COMMIT")
    with open(path, encoding="utf-8") as f:
        commit = json.load(f)
    names = sorted(n for n in os.listdir(ckpt) if n != "COMMIT")
    if isinstance(next(iter(commit["files"].values())), dict):  # {"bytes": .., "sha256": ..}
        commit["files"] = {n: {"bytes": os.path.getsize(os.path.join(ckpt, n)),
                               "sha256": _sha256(os.path.join(ckpt, n))} for n in names}
    else:  # sizes only
        commit["files"] = {n: os.path.getsize(os.path.join(ckpt, n)) for n in names}
    for key in list(commit):
        if key.endswith("_sha256"):  # e.g. train_state_sha256
            commit[key] = _sha256(os.path.join(ckpt, key[: -len("_sha256")] + ".json"))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(commit, f)


def plant_pickle_payload(ckpt: str, marker: str, suffix: str = "/param/0") -> list[str]:
    """Turn every saved entry whose key ends with ``suffix`` into a DCP byte entry whose bytes
    are a pickle that creates ``marker`` when loaded with ``torch.load(weights_only=False)``.
    The byte entries also carry ``size``/``properties`` attributes so that code reading the
    metadata as if it held tensors goes on to load them. Returns the keys changed."""
    with open(os.path.join(ckpt, ".metadata"), "rb") as f:
        md = pickle.load(f)  # the attacker's own copy, plain pickle
    payload = os.path.join(ckpt, "__payload.distcp")
    with open(payload, "wb") as f:
        torch.save(_Marker(marker), f)
    length = os.path.getsize(payload)
    changed = []
    for fqn, entry in list(md.state_dict_metadata.items()):
        if not fqn.endswith(suffix):
            continue
        evil = BytesStorageMetadata()
        evil.__dict__.update(size=entry.size, properties=TensorProperties(dtype=entry.properties.dtype),
                             chunks=entry.chunks)
        md.state_dict_metadata[fqn] = evil
        md.storage_data = {k: v for k, v in md.storage_data.items() if k.fqn != fqn}
        md.storage_data[MetadataIndex(fqn)] = _StorageInfo("__payload.distcp", 0, length)
        changed.append(fqn)
    with open(os.path.join(ckpt, ".metadata"), "wb") as f:
        pickle.dump(md, f)
    recompute_commit(ckpt)
    return changed


def flip_bytes(path: str, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of ``path`` (same size: a size check cannot see it)."""
    size = os.path.getsize(path)
    start = max(0, size // 2 - count // 2)
    with open(path, "r+b") as f:
        f.seek(start)
        data = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))
