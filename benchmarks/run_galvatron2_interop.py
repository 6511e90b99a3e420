#!/usr/bin/env python3
"""Galvatron-2 interoperability figures on its reference llama2-7b / 1x8 GPU / 36 GB files: one
JSON line per case (cost-model predictions, no timing of ours).

- ``import/*``: its batch-64 plan (pp2 16+16, 32 micro-batches, tp2 dp2 ZeRO-2, embedding
  Ulysses sp2; notes/galvatron-reference.md) imported with Megatron-SP off (the old default) and
  with the default now (on, as its runtime runs tp layers).
- ``search/*``: the free search and ``--galvatron2-compatible`` at batch 64, and whether each
  result exports to Galvatron-2's format.

    python benchmarks/run_galvatron2_interop.py [--reference DIR] [--out FILE.jsonl]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile

import galvatron
from galvatron.plan_io import load_plan, write_galvatron2_plan
from galvatron.profiles import hardware_from_galvatron, model_from_galvatron

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REF = os.path.join(HERE, "..", "..", "shared", "reference", "galvatron")


def _batch64_plan() -> dict:
    every = lambda v: ",".join([str(v)] * 32)  # noqa: E731 - a local shorthand
    return {"pp_deg": 2, "tp_sizes_enc": every(2), "tp_consecutive_flags": every(1), "dp_types_enc": every(0),
            "use_sp": every(0), "checkpoint": every(0), "global_bsz": 64, "chunks": 32, "pp_division": "16,16",
            "pipeline_type": "pipedream_flush", "default_dp_type": "zero2", "vtp": 2, "vsp": 1, "embed_sdp": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=os.environ.get("GALVATRON_REFERENCE", DEFAULT_REF))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ref = args.reference
    hw = hardware_from_galvatron(ref, num_nodes=1, gpus_per_node=8, device_memory_gb=36)
    mp = model_from_galvatron(glob.glob(os.path.join(ref, "computation_profiling_*"))[0],
                              glob.glob(os.path.join(ref, "memory_profiling_*"))[0], seq_len=2048,
                              model="llama2-7b", num_layers=32, num_heads=32, hidden_size=4096)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "galvatron_config_llama2-7b_1nodes_8gpus_per_node_36GB_bf16.json")
        with open(path, "w") as f:
            json.dump(_batch64_plan(), f)
        for name, sp in (("import/megatron_sp_off", False), ("import/default", None)):
            e = galvatron.estimate(load_plan(path, megatron_sp=sp), mp, hw)
            rows.append({"case": name, "samples_per_s": round(e.samples_per_s, 4),
                         "peak_gib": round(e.max_peak_memory_bytes / 2**30, 3)})
    for name, compat in (("search/free", False), ("search/galvatron2_compatible", True)):
        kw = {"galvatron2_compatible": True, "dp_types": ["ddp", "zero2", "zero3"]} if compat else {}
        res = galvatron.search(mp, hw, memory_gb=36, global_batch_size=64, uniform_baseline=False,
                               num_threads=1, **kw)
        try:
            write_galvatron2_plan(res.plan)
            exports = "yes"
        except ValueError as e:
            exports = f"refused: {e}"
        rows.append({"case": name, "samples_per_s": round(res.predicted.samples_per_s, 4),
                     "peak_gib": round(res.predicted.max_peak_memory_bytes / 2**30, 3), "exports": exports})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
