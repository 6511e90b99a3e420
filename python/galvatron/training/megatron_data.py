"""Megatron-LM indexed datasets (``PREFIX.bin`` + ``PREFIX.idx``), read memory-mapped.

The format (Megatron-LM's ``MMapIndexedDataset``, also written by Galvatron-2's and NeMo's
preprocessing tools), all integers little-endian:

========================  =====================================================
``.idx`` bytes            content
========================  =====================================================
9                         magic ``b"MMIDIDX\\x00\\x00"``
8 (uint64)                version, 1
1 (uint8)                 dtype code of the tokens: 1 uint8, 2 int8, 3 int16,
                          4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
8 (uint64)                ``S``: number of sequences
8 (uint64)                ``D``: number of document-index entries
4 * S (int32)             sequence lengths, in tokens
8 * S (int64)             sequence pointers: byte offset of each sequence in ``.bin``
8 * D (int64)             document index: first sequence of each document, then ``S``
(S bytes, optional)       sequence modes (multimodal datasets; ignored)
========================  =====================================================

``.bin`` holds the sequences back to back. Every field is checked against the others and
against the file sizes before anything is mapped, so a truncated or hostile file gives a
``ValueError`` naming the file and the field, never a crash or a silent misread. Token ids
must be integers: float dtypes are refused.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
_FLOAT_CODES = {6: "float64", 7: "float32"}
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequence count, document count


@dataclass(frozen=True)
class MegatronIndexedDataset:
    """A validated, memory-mapped Megatron indexed dataset. ``tokens`` is the whole ``.bin`` as
    one token stream (the sequences are contiguous); ``sizes``/``pointers`` locate sequence
    ``i`` and ``document_index`` groups sequences into documents."""

    prefix: str
    tokens: np.ndarray
    sizes: np.ndarray
    pointers: np.ndarray
    document_index: np.ndarray

    def __len__(self) -> int:
        return int(self.sizes.size)

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range ({len(self)} sequences)")
        start = int(self.pointers[i]) // self.tokens.itemsize
        return self.tokens[start:start + int(self.sizes[i])]

    @property
    def num_documents(self) -> int:
        return int(self.document_index.size) - 1

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.size)


def index_path(prefix: str) -> str:
    return prefix + ".idx"


def data_path(prefix: str) -> str:
    return prefix + ".bin"


def _strip_suffix(prefix: str) -> str:
    for suffix in (".bin", ".idx"):
        if prefix.endswith(suffix):
            return prefix[: -len(suffix)]
    return prefix


def read_index(path: str) -> tuple[type, np.ndarray, np.ndarray, np.ndarray]:
    """(token dtype, sizes, pointers, document index) of an ``.idx`` file, header checked."""
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(_HEADER.size)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the Megatron index: {e.strerror or e}") from None
    if len(head) < _HEADER.size:
        raise ValueError(f"{path}: {file_size} bytes is too short for a Megatron index header "
                         f"({_HEADER.size} bytes)")
    magic, version, code, num_seqs, num_docs = _HEADER.unpack(head)
    if magic != MAGIC:
        raise ValueError(f"{path}: magic {magic!r} is not a Megatron MMapIndexedDataset index "
                         f"(expected {MAGIC!r})")
    if version != VERSION:
        raise ValueError(f"{path}: version {version} is not supported; accepted: {VERSION}")
    if code in _FLOAT_CODES:
        raise ValueError(f"{path}: dtype code {code} ({_FLOAT_CODES[code]}) holds no token ids; accepted "
                         "integer codes: 1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 8 uint16")
    if code not in DTYPES:
        raise ValueError(f"{path}: dtype code {code} is unknown; accepted: 1 uint8, 2 int8, 3 int16, "
                         "4 int32, 5 int64, 8 uint16")
    body = file_size - _HEADER.size
    need = 12 * num_seqs + 8 * num_docs  # checked before any array is mapped (counts may be huge)
    if need != body and need + num_seqs != body:  # optional trailing sequence modes
        raise ValueError(f"{path}: the header declares {num_seqs} sequences and {num_docs} document "
                         f"entries ({need} bytes of arrays) but the file has {body} bytes after it")
    if num_docs < 1:
        raise ValueError(f"{path}: document index: empty (it ends with the sequence count)")
    offset = _HEADER.size
    sizes = np.memmap(path, dtype="<i4", mode="r", offset=offset, shape=(num_seqs,)) if num_seqs else \
        np.zeros(0, dtype=np.int32)
    offset += 4 * num_seqs
    pointers = np.memmap(path, dtype="<i8", mode="r", offset=offset, shape=(num_seqs,)) if num_seqs else \
        np.zeros(0, dtype=np.int64)
    offset += 8 * num_seqs
    docs = np.memmap(path, dtype="<i8", mode="r", offset=offset, shape=(num_docs,))
    return DTYPES[code], sizes, pointers, docs


def _check_layout(path: str, dtype: type, sizes: np.ndarray, pointers: np.ndarray, docs: np.ndarray,
                  bin_size: int) -> None:
    """Sequences back to back from byte 0, filling ``.bin``; documents in order over them."""
    item = np.dtype(dtype).itemsize
    if sizes.size and int(sizes.min()) < 0:
        raise ValueError(f"{path}: sequence lengths: {int(sizes.min())} is negative")
    ends = np.cumsum(sizes.astype(np.int64)) * item
    starts = np.concatenate([[0], ends[:-1]]) if sizes.size else ends
    if not np.array_equal(pointers, starts):
        bad = int(np.argmax(pointers != starts))
        raise ValueError(f"{path}: sequence pointer {bad} is {int(pointers[bad])} but the sequences before "
                         f"it end at byte {int(starts[bad])} (sequences must be contiguous)")
    total = int(ends[-1]) if sizes.size else 0
    if total != bin_size:
        raise ValueError(f"{path}: the index covers {total} bytes of tokens but the .bin file has {bin_size}")
    if int(docs[0]) != 0 or int(docs[-1]) != sizes.size or (docs.size > 1 and bool(np.any(np.diff(docs) < 0))):
        raise ValueError(f"{path}: document index: must rise from 0 to the sequence count {sizes.size}")


def open_dataset(prefix: str) -> MegatronIndexedDataset:
    """Open ``PREFIX.bin`` + ``PREFIX.idx`` (``prefix`` may also end in ``.bin`` or ``.idx``)."""
    prefix = _strip_suffix(os.fspath(prefix))
    idx, bin_ = index_path(prefix), data_path(prefix)
    for p in (idx, bin_):
        if not os.path.isfile(p):
            raise ValueError(f"data.path: {p} not found (a Megatron dataset is PREFIX.bin + PREFIX.idx; "
                             "give PREFIX)")
    dtype, sizes, pointers, docs = read_index(idx)
    bin_size = os.path.getsize(bin_)
    _check_layout(idx, dtype, sizes, pointers, docs, bin_size)
    tokens = np.memmap(bin_, dtype=dtype, mode="r") if bin_size else np.zeros(0, dtype=dtype)
    return MegatronIndexedDataset(prefix, tokens, sizes, pointers, docs)


def write_dataset(prefix: str, documents: list[list[np.ndarray]], dtype: type = np.uint16) -> None:
    """Write ``documents`` (each a list of sequences) in the format above: for tests and for
    converting small corpora. ``dtype`` must be one of the integer dtypes of :data:`DTYPES`."""
    codes = {np.dtype(v): k for k, v in DTYPES.items()}
    if np.dtype(dtype) not in codes:
        raise ValueError(f"dtype {np.dtype(dtype).name} is not accepted; accepted: "
                         f"{sorted(np.dtype(v).name for v in DTYPES.values())}")
    seqs = [np.asarray(s, dtype=dtype) for doc in documents for s in doc]
    sizes = np.array([s.size for s in seqs], dtype="<i4")
    item = np.dtype(dtype).itemsize
    pointers = np.concatenate([[0], np.cumsum(sizes.astype(np.int64))[:-1] * item]).astype("<i8") \
        if seqs else np.zeros(0, dtype="<i8")
    docs = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype("<i8")
    with open(data_path(prefix), "wb") as f:
        for s in seqs:
            f.write(s.astype(np.dtype(dtype).newbyteorder("<")).tobytes())
    with open(index_path(prefix), "wb") as f:
        f.write(_HEADER.pack(MAGIC, VERSION, codes[np.dtype(dtype)], len(seqs), docs.size))
        f.write(sizes.tobytes())
        f.write(pointers.tobytes())
        f.write(docs.tobytes())
