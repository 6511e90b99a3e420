#!/usr/bin/env python3
"""Search-speed benchmark: one JSON line per case.

Cases: GPT/LLaMA 7B, 13B, 70B on 8 to 1024 devices with 24-80 GB, analytic A100 profiles; and,
when ``../shared/reference/galvatron/`` (or ``--reference DIR``) is present, the reference
llama2-7b / 8-GPU / 36 GB / batch-64 problem read through the Galvatron-2 importers (Galvatron-2
takes ~150 s on one core for it). Every case runs on one thread (``num_threads=1``) unless
``--threads`` says otherwise. Targets: the reference case under 0.5 s; 70B on 1024 and on 1536
devices (192 nodes: every divisor is searched, not only powers of two) under 5 s.

    python benchmarks/run_search_bench.py [--quick] [--out benchmarks/results/search_bench_DATE.jsonl]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import galvatron
from galvatron.profiles import (
    HardwareProfile,
    ModelProfile,
    hardware_from_galvatron,
    model_from_galvatron,
)

# (name, model, seq, nodes, gpus per node, memory GB, global batch)
CASES = [
    ("gpt2-xl/32/24GB", "gpt2-xl", 1024, 4, 8, 24, 256),
    ("llama2-7b/8/36GB", "llama2-7b", 2048, 1, 8, 36, 64),
    ("llama2-7b/16/24GB", "llama2-7b", 4096, 2, 8, 24, 128),
    ("llama2-13b/16/40GB", "llama2-13b", 2048, 2, 8, 40, 64),
    ("llama2-13b/64/80GB", "llama2-13b", 4096, 8, 8, 80, 256),
    ("llama2-70b/64/80GB", "llama2-70b", 4096, 8, 8, 80, 128),
    ("llama2-70b/256/80GB", "llama2-70b", 4096, 32, 8, 80, 512),
    ("llama2-7b/256/24GB", "llama2-7b", 4096, 32, 8, 24, 512),
    ("llama2-70b/1024/80GB", "llama2-70b", 4096, 128, 8, 80, 1024),
    # any device count (issue 15): 3 nodes, and 192 nodes (1,536 devices = 2^9 * 3)
    ("llama2-13b/24/80GB", "llama2-13b", 4096, 3, 8, 80, 96),
    ("llama2-70b/1536/80GB", "llama2-70b", 4096, 192, 8, 80, 1536),
]
QUICK = {"llama2-7b/8/36GB", "llama2-13b/16/40GB", "llama2-70b/1024/80GB", "llama2-70b/1536/80GB"}


def record(name: str, model: ModelProfile, hw: HardwareProfile, memory_gb: float, batch: int, threads: int,
           source: str) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    res = galvatron.search(model, hw, memory_gb=memory_gb, global_batch_size=batch, num_threads=threads,
                           uniform_baseline=True)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    p = res.plan
    return {
        "case": name, "model": model.model, "source": source, "world_size": hw.world_size,
        "memory_gb": memory_gb, "global_batch_size": batch, "seq_len": model.seq_len, "threads": threads,
        "search_time_s": round(res.search_time_s, 4),
        "uniform_search_time_s": round(res.best_uniform.search_time_s, 4) if res.best_uniform else None,
        "total_time_s": round(total, 4), "total_cpu_s": round(cpu, 4), "load_average_1m": os.getloadavg()[0],
        **res.stats,
        "samples_per_s": round(res.predicted.samples_per_s, 4),
        "uniform_samples_per_s": round(res.best_uniform.predicted.samples_per_s, 4) if res.best_uniform else None,
        "speedup_over_uniform": round(res.speedup_over_uniform, 4) if res.best_uniform else None,
        "peak_memory_gib": round(res.predicted.max_peak_memory_bytes / 2**30, 3),
        "plan": {"pp": p.pp, "num_microbatches": p.num_microbatches, "stage_layers": list(p.stage_layers),
                 "layers": sorted({s.describe() for s in p.layers}), "embedding": p.embedding.describe()},
    }


def reference_case(ref: str, threads: int) -> dict | None:
    comp = os.path.join(ref, "computation_profiling_bf16_llama2-7b_all.json")
    mem = os.path.join(ref, "memory_profiling_bf16_llama2-7b_all.json")
    if not (os.path.exists(comp) and os.path.exists(mem)):
        return None
    hw = hardware_from_galvatron(ref, num_nodes=1, gpus_per_node=8, device_memory_gb=36)
    mp = model_from_galvatron(comp, mem, seq_len=2048, model="llama2-7b", num_layers=32, num_heads=32,
                                     hidden_size=4096)
    return record("reference llama2-7b/8/36GB (Galvatron-2 profiles)", mp, hw, 36, 64, threads, "galvatron-2 files")


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three representative cases")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference", default=os.path.join(here, "..", "..", "shared", "reference", "galvatron"))
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args()
    lines = []
    meta = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "galvatron": galvatron.__version__,
            "command": " ".join(sys.argv), "load_average_1m": os.getloadavg()[0]}
    print(json.dumps({"meta": meta}), flush=True)
    lines.append({"meta": meta})
    ref = reference_case(args.reference, args.threads)
    if ref is not None:
        print(json.dumps(ref), flush=True)
        lines.append(ref)
    for name, model, seq, nodes, gpn, mem, batch in CASES:
        if args.quick and name not in QUICK:
            continue
        hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=nodes, gpus_per_node=gpn)
        mp = galvatron.model_profile(model, seq_len=seq, hardware=hw)
        line = record(name, mp, hw, mem, batch, args.threads, "analytic a100-80g-sxm")
        print(json.dumps(line), flush=True)
        lines.append(line)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
