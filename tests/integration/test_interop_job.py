"""Inputs from other systems through the training job: a Megatron indexed dataset
(``--data.kind megatron``) feeding a T5 whose encoder and decoder depths differ, as a pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from galvatron.training.data import builtin_corpus, byte_encode
from galvatron.training.megatron_data import write_dataset


def test_megatron_dataset_trains_a_t5_with_unequal_depths_as_a_pipeline(tmp_path):
    docs = [[byte_encode(s + ".")] for s in builtin_corpus(2000).split(". ")]  # one sequence per document
    prefix = str(tmp_path / "corpus_text_document")
    write_dataset(prefix, docs, dtype=np.uint16)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "galvatron.train", "--run-dir", str(run), "--nproc", "2",
           "--global-batch-size", "8", "--seq-len", "32", "--model", "t5-debug",
           "--model.overrides", '{"num_layers": 3, "num_decoder_layers": 1}', "--optim.warmup_steps", "2",
           "--steps", "6", "--pp", "2", "--num-microbatches", "2",
           "--data.kind", "megatron", "--data.path", prefix]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    with open(run / "metrics.jsonl") as f:
        rows = [json.loads(line)["loss"] for line in f if line.strip()]
    assert len(rows) == 6 and rows[-1] < rows[0]
    plan = json.loads((run / "plan.json").read_text())
    assert len(plan["layers"]) == 4  # 3 encoder + 1 decoder layers


def test_a_hostile_megatron_index_stops_the_job_with_one_line(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"MMIDIDX\x00\x00" + (7).to_bytes(8, "little") + bytes(17))
    (tmp_path / "x.bin").write_bytes(b"")
    cmd = [sys.executable, "-m", "galvatron.train", "--run-dir", str(tmp_path / "run"), "--nproc", "2",
           "--steps", "1", "--data.kind", "megatron", "--data.path", str(tmp_path / "x")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert r.returncode != 0
    assert "x.idx: version 7 is not supported; accepted: 1" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
