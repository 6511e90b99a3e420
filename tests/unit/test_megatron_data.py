"""Megatron indexed datasets (.bin + .idx): read memory-mapped, every header field checked.

The files are written here byte by byte with ``struct`` (independently of the writer in
``megatron_data``), following Megatron-LM's MMapIndexedDataset layout."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from galvatron.training import data as D
from galvatron.training.config import TrainConfig
from galvatron.training.megatron_data import open_dataset, write_dataset

DOCS = [[[5, 6, 7], [8, 9]], [[10]], [[11, 12, 13, 14]]]  # 3 documents, 4 sequences


def raw_files(prefix, seqs, docs, code=8, np_dtype="<u2", magic=b"MMIDIDX\x00\x00", version=1,
              num_seqs=None, num_docs=None, pointers=None, trailing=b""):
    """An .idx/.bin pair built field by field (each field can be corrupted)."""
    sizes = [len(s) for s in seqs]
    item = np.dtype(np_dtype).itemsize
    if pointers is None:
        pointers = list(np.concatenate([[0], np.cumsum(sizes)[:-1]]) * item) if seqs else []
    idx = magic + struct.pack("<Q", version) + struct.pack("<B", code)
    idx += struct.pack("<Q", len(seqs) if num_seqs is None else num_seqs)
    idx += struct.pack("<Q", len(docs) if num_docs is None else num_docs)
    idx += struct.pack(f"<{len(sizes)}i", *sizes) + struct.pack(f"<{len(pointers)}q", *pointers)
    idx += struct.pack(f"<{len(docs)}q", *docs) + trailing
    with open(f"{prefix}.idx", "wb") as f:
        f.write(idx)
    with open(f"{prefix}.bin", "wb") as f:
        for s in seqs:
            f.write(np.asarray(s, dtype=np_dtype).tobytes())
    return str(prefix)


SEQS = [s for d in DOCS for s in d]
DOC_INDEX = [0, 2, 3, 4]


def test_reads_a_file_written_in_megatrons_layout(tmp_path):
    prefix = raw_files(tmp_path / "corpus_text_document", SEQS, DOC_INDEX)
    ds = open_dataset(prefix)
    assert len(ds) == 4 and ds.num_documents == 3 and ds.num_tokens == 10
    assert [ds[i].tolist() for i in range(4)] == SEQS
    assert ds.tokens.dtype == np.uint16 and isinstance(ds.tokens, np.memmap)  # memory-mapped
    assert ds.document_index.tolist() == DOC_INDEX
    assert open_dataset(prefix + ".bin").num_tokens == 10  # PREFIX.bin is accepted too


@pytest.mark.parametrize("np_dtype, code", [("<i4", 4), ("<i8", 5), ("u1", 1)])
def test_every_integer_dtype_code(tmp_path, np_dtype, code):
    prefix = raw_files(tmp_path / "c", SEQS, DOC_INDEX, code=code, np_dtype=np_dtype)
    assert [open_dataset(prefix)[i].tolist() for i in range(4)] == SEQS


def test_multimodal_trailing_sequence_modes_are_accepted(tmp_path):
    prefix = raw_files(tmp_path / "c", SEQS, DOC_INDEX, trailing=bytes(len(SEQS)))
    assert open_dataset(prefix).num_tokens == 10


def test_the_writer_and_the_reader_agree(tmp_path):
    write_dataset(str(tmp_path / "w"), [[np.array(s) for s in d] for d in DOCS], dtype=np.int32)
    ds = open_dataset(str(tmp_path / "w"))
    assert [ds[i].tolist() for i in range(len(ds))] == SEQS and ds.num_documents == 3
    raw_files(tmp_path / "r", SEQS, DOC_INDEX, code=4, np_dtype="<i4")
    assert (tmp_path / "w.idx").read_bytes() == (tmp_path / "r.idx").read_bytes()


@pytest.mark.parametrize("changes, message", [
    (dict(magic=b"NOTANIDX\x00"), "magic b'NOTANIDX.*' is not a Megatron MMapIndexedDataset index"),
    (dict(version=2), "version 2 is not supported; accepted: 1"),
    (dict(code=7, np_dtype="<f4"), "dtype code 7 \\(float32\\) holds no token ids"),
    (dict(code=9), "dtype code 9 is unknown"),
    (dict(num_seqs=2**60), "declares 1152921504606846976 sequences .* but the file has"),
    (dict(num_docs=99), "declares 4 sequences and 99 document entries"),
    (dict(pointers=[0, 6, 10, 999]), "sequence pointer 3 is 999 but the sequences before it end at byte 12"),
    (dict(docs=[0, 3, 2, 4]), "document index: must rise from 0 to the sequence count 4"),
    (dict(docs=[0, 2, 3]), "document index: must rise from 0 to the sequence count 4"),
    (dict(trailing=b"xy"), "but the file has"),
])
def test_hostile_or_damaged_indexes_give_clear_errors(tmp_path, changes, message):
    kw = dict(seqs=SEQS, docs=DOC_INDEX)
    kw.update({k: changes.pop(k) for k in ("docs",) if k in changes})
    prefix = raw_files(tmp_path / "bad", **kw, **changes)
    with pytest.raises(ValueError, match=message) as e:
        open_dataset(prefix)
    assert "bad.idx" in str(e.value)


def test_bin_size_must_match_the_index(tmp_path):
    prefix = raw_files(tmp_path / "c", SEQS, DOC_INDEX)
    with open(prefix + ".bin", "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(ValueError, match="covers 20 bytes of tokens but the .bin file has 22"):
        open_dataset(prefix)


def test_truncated_header_and_missing_files(tmp_path):
    (tmp_path / "t.idx").write_bytes(b"MMIDIDX")
    (tmp_path / "t.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="too short for a Megatron index header"):
        open_dataset(str(tmp_path / "t"))
    with pytest.raises(ValueError, match="nothere.idx not found.*PREFIX.bin \\+ PREFIX.idx"):
        open_dataset(str(tmp_path / "nothere"))


def test_training_data_kind_megatron_reads_the_stream(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[rng.integers(0, 300, size=n)] for n in (50, 70, 90, 40)]
    write_dataset(str(tmp_path / "corpus"), docs, dtype=np.uint16)
    data = D.TokenData.load("megatron", str(tmp_path / "corpus"), eval_fraction=0.1, seq_len=16)
    stream = np.concatenate([d[0] for d in docs])
    assert data.vocab_size == int(stream.max()) + 1
    assert np.array_equal(np.concatenate([data.train, data.eval]), stream)
    b = data.batch(step=3, global_batch=4, seq_len=16, seed=0)
    assert b["input_ids"].shape == (4, 16) and np.array_equal(b["input_ids"][:, 1:], b["labels"][:, :-1])


def test_config_accepts_kind_megatron_with_a_path():
    cfg = TrainConfig()
    cfg.data.kind = "megatron"
    with pytest.raises(ValueError, match="data.path is required with data.kind = 'megatron'"):
        cfg.validate()
    cfg.data.path = "/data/corpus_text_document"
    cfg.validate()
