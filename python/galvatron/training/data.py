"""Training data: a byte-level tokenizer, a built-in corpus, pre-tokenized token files (the
uint16/uint32 ``.bin`` format nanoGPT and Megatron users have), ``galvatron data prepare``, and
synthetic images for ViT/Swin.

Sampling is a pure function of (seed, step): the global batch of step ``t`` is drawn from a
generator seeded with ``(seed, t)``, so a resumed run reads exactly what an uninterrupted run
would have read, and data-parallel rank ``r`` of ``dp`` takes rows ``r*B/dp .. (r+1)*B/dp``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

import numpy as np

from galvatron._io import read_json
from galvatron._validate import check_int

BYTE_VOCAB = 257  # 256 byte values + end-of-text
EOT = 256

_SUBJECTS = ["the engineer", "a small model", "the cluster", "every device", "the scheduler", "our search",
             "the pipeline", "a tensor", "the optimizer", "each layer", "the profiler", "a gradient"]
_VERBS = ["splits", "measures", "gathers", "reduces", "predicts", "shards", "trains", "checks", "sends",
          "balances", "stores", "recomputes"]
_OBJECTS = ["the activations", "its parameters", "the batch", "a plan", "the memory", "every shard",
            "the loss", "four micro-batches", "the sequence", "the weights", "a checkpoint", "the bubble"]
_ENDINGS = ["quickly", "in parallel", "without a hang", "on every rank", "before the next step",
            "exactly", "across the nodes", "with little memory"]


def builtin_corpus(num_sentences: int = 20000, seed: int = 0) -> str:
    """A deterministic English-like corpus (a small grammar), so the built-in job learns
    something real without downloads: the loss falls well below the byte-uniform log(257)."""
    rng = random.Random(seed)
    out = []
    for _ in range(num_sentences):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_ENDINGS)}."
        out.append(s[0].upper() + s[1:])
    return " ".join(out)


def byte_encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)


def byte_decode(tokens: np.ndarray) -> str:
    return bytes(int(t) for t in tokens if t < 256).decode("utf-8", errors="replace")


def prepare(inputs: list[str], out_dir: str, tokenizer: str = "byte", hf_dataset: str | None = None,
            text_field: str = "text", split: str = "train") -> dict:
    """Tokenize text files into ``out_dir/tokens.bin`` + ``meta.json`` (end-of-text between
    files). ``tokenizer``: ``byte`` (built in), ``tiktoken:NAME`` or ``hf:PATH`` when installed.
    ``hf_dataset`` (needs the ``datasets`` package): also the ``text_field`` of every record of
    ``split`` of a Hugging Face dataset, end-of-text between records (see :func:`hf_records`)."""
    if not inputs and not hf_dataset:
        raise ValueError("data prepare: give text files and/or --hf-dataset")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir}: exists and is not a directory; give a directory (it is created)")
    encode, vocab, eot = _tokenizer(tokenizer)
    chunks = []
    for path in inputs:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: cannot read as UTF-8 text: {e}") from None
        chunks.append(np.asarray(encode(text), dtype=np.int64))
        chunks.append(np.asarray([eot], dtype=np.int64))
    if hf_dataset:
        for text in hf_records(hf_dataset, text_field, split):
            chunks.append(np.asarray(encode(text), dtype=np.int64))
            chunks.append(np.asarray([eot], dtype=np.int64))
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    meta = {"version": 1, "tokenizer": tokenizer, "vocab_size": vocab, "eot": eot,
            "dtype": np.dtype(dtype).name, "num_tokens": int(tokens.size),
            "sources": list(inputs) + ([f"hf:{hf_dataset}[{split}].{text_field}"] if hf_dataset else [])}
    tmp = os.path.join(out_dir, "tokens.bin.tmp")
    try:
        os.makedirs(out_dir, exist_ok=True)
        tokens.astype(dtype).tofile(tmp)
        os.replace(tmp, os.path.join(out_dir, "tokens.bin"))
        with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ValueError(f"--out {out_dir}: cannot write: {e.strerror or e}") from None
    return meta


def hf_records(spec: str, text_field: str = "text", split: str = "train"):
    """The ``text_field`` strings of a Hugging Face dataset, in order. ``spec``: a directory
    written by ``Dataset.save_to_disk``, ``BUILDER:FILES`` for local files (``json:data.jsonl``,
    ``parquet:train-*.parquet``, ``csv:...``, ``text:...``), or a dataset name on the Hub."""
    try:
        import datasets
    except ModuleNotFoundError:
        raise ValueError("--hf-dataset needs the datasets package: pip install datasets") from None
    try:
        saved = ("dataset_info.json", "dataset_dict.json", "state.json")
        if os.path.isdir(spec) and any(os.path.exists(os.path.join(spec, f)) for f in saved):
            ds = datasets.load_from_disk(spec)
        elif ":" in spec and spec.split(":", 1)[0] in ("json", "parquet", "csv", "text", "arrow"):
            builder, files = spec.split(":", 1)
            ds = datasets.load_dataset(builder, data_files=files)
        else:
            ds = datasets.load_dataset(spec)
    except (OSError, ValueError, FileNotFoundError) as e:
        raise ValueError(f"--hf-dataset {spec}: cannot load it: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"--hf-dataset {spec}: no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    if text_field not in ds.column_names:
        raise ValueError(f"--hf-dataset {spec}: no field {text_field!r}; its fields are {ds.column_names}")
    for row in ds.select_columns([text_field]):
        value = row[text_field]
        if not isinstance(value, str):
            raise ValueError(f"--hf-dataset {spec}: field {text_field!r} holds {type(value).__name__}, not text")
        yield value


def _tokenizer(spec: str):
    if spec == "byte":
        return byte_encode, BYTE_VOCAB, EOT
    if spec.startswith("tiktoken:"):
        try:
            import tiktoken
        except ModuleNotFoundError:
            raise ValueError("tokenizer tiktoken:...: the tiktoken package is not installed") from None
        enc = tiktoken.get_encoding(spec.split(":", 1)[1])
        return (lambda t: enc.encode_ordinary(t)), enc.n_vocab, enc.eot_token
    if spec.startswith("hf:"):
        try:
            from transformers import AutoTokenizer
        except ModuleNotFoundError:
            raise ValueError("tokenizer hf:...: the transformers package is not installed") from None
        tok = AutoTokenizer.from_pretrained(spec.split(":", 1)[1], local_files_only=True)
        eot = tok.eos_token_id if tok.eos_token_id is not None else 0
        return (lambda t: tok(t)["input_ids"]), len(tok), eot
    raise ValueError(f"tokenizer {spec!r} is not accepted; accepted: 'byte', 'tiktoken:NAME', 'hf:PATH'")


@dataclass
class TokenData:
    """Tokens of a training split and an evaluation split."""

    train: np.ndarray
    eval: np.ndarray
    vocab_size: int

    @classmethod
    def load(cls, kind: str, path: str = "", token_dtype: str = "auto", eval_fraction: float = 0.05,
             seq_len: int = 128) -> TokenData:
        if kind == "builtin":
            tokens, vocab = byte_encode(builtin_corpus()), BYTE_VOCAB
        elif kind == "megatron":
            tokens, vocab = _load_megatron(path)
        else:
            tokens, vocab = _load_bin(path, token_dtype)
        n_eval = max(seq_len + 1, int(tokens.size * eval_fraction))
        if tokens.size < n_eval + seq_len + 1:
            raise ValueError(f"data: {tokens.size} tokens are too few for sequences of {seq_len} "
                             f"(need at least {n_eval + seq_len + 1})")
        return cls(train=tokens[:-n_eval], eval=tokens[-n_eval:], vocab_size=vocab)

    def batch(self, step: int, global_batch: int, seq_len: int, seed: int, split: str = "train",
              continuation: bool = False) -> dict:
        """The global batch of `step`, int64 arrays: input_ids and labels (next tokens); with
        `continuation` (encoder-decoder models) the labels are the `seq_len` tokens that follow
        input_ids (the decoder continues the text; its inputs are the labels shifted right)."""
        data = self.train if split == "train" else self.eval
        span = 2 * seq_len if continuation else seq_len + 1
        if data.size <= span:
            raise ValueError(f"data: the {split} split has {data.size} tokens, too few for windows "
                             f"of {span}")
        rng = np.random.default_rng([seed, step, 0 if split == "train" else 1])
        starts = rng.integers(0, data.size - span, size=global_batch)
        idx = starts[:, None] + np.arange(span)[None, :]
        window = np.asarray(data[idx], dtype=np.int64)
        if continuation:
            return {"input_ids": window[:, :seq_len], "labels": window[:, seq_len:]}
        return {"input_ids": window[:, :-1], "labels": window[:, 1:]}


def _load_bin(path: str, token_dtype: str) -> tuple[np.ndarray, int]:
    meta = {}
    if os.path.isdir(path):
        meta_path = os.path.join(path, "meta.json")
        if os.path.exists(meta_path):
            meta = read_json(meta_path)
            if not isinstance(meta, dict):
                raise ValueError(f"{meta_path}: must be a JSON object")
        path = os.path.join(path, "tokens.bin")
    if not os.path.exists(path):
        raise ValueError(f"data.path: {path} not found (a .bin token file or a directory from `galvatron data prepare`)")
    dtype = meta.get("dtype", "uint16") if token_dtype == "auto" else token_dtype
    if dtype not in ("uint16", "uint32"):
        raise ValueError(f"data.token_dtype: {dtype!r} is not accepted; accepted: 'uint16', 'uint32'")
    if os.path.getsize(path) % np.dtype(dtype).itemsize:
        raise ValueError(f"{path}: size is not a multiple of {dtype} elements")
    tokens = np.memmap(path, dtype=dtype, mode="r")
    if "vocab_size" in meta:
        try:
            vocab = check_int(meta["vocab_size"], "vocab_size", 1, 2**32)
        except ValueError as e:
            raise ValueError(f"{os.path.join(os.path.dirname(path), 'meta.json')}: {e}") from None
    else:
        vocab = int(tokens.max()) + 1 if tokens.size else 1
    return tokens, vocab


def _load_megatron(prefix: str) -> tuple[np.ndarray, int]:
    """The token stream of a Megatron indexed dataset (memory-mapped) and its vocabulary
    bound (largest id + 1; the format does not record the vocabulary)."""
    from galvatron.training.megatron_data import open_dataset

    ds = open_dataset(prefix)
    if ds.num_tokens == 0:
        return ds.tokens, 1
    low, high = int(ds.tokens.min()), int(ds.tokens.max())
    if low < 0:
        raise ValueError(f"{ds.prefix}.bin: token id {low} is negative")
    return ds.tokens, high + 1


def image_batch(step: int, global_batch: int, image_size: int, channels: int, num_classes: int,
                seed: int) -> dict:
    """Synthetic, learnable images: a per-class template (fixed by `seed`) plus noise."""
    templates = np.random.default_rng([seed, 12345]).standard_normal((num_classes, channels, image_size, image_size))
    rng = np.random.default_rng([seed, step, 2])
    labels = rng.integers(0, num_classes, size=global_batch)
    images = templates[labels] + 0.5 * rng.standard_normal((global_batch, channels, image_size, image_size))
    return {"pixel_values": images.astype(np.float32), "labels": labels.astype(np.int64)}
