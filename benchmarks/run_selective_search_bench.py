#!/usr/bin/env python3
"""Search time with and without selective checkpointing in the space (one JSON line per run):
the reference-size llama2-7b / 8-GPU / 36 GB problem and llama2-70b on 1024 devices, analytic
A100 profiles, one thread, alternating so both see the same machine load.

    python benchmarks/run_selective_search_bench.py
"""
import json
import os
import time

import galvatron

hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=128, gpus_per_node=8)
mp = galvatron.model_profile("llama2-70b", seq_len=4096, hardware=hw)
hw8 = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
mp8 = galvatron.model_profile("llama2-7b", seq_len=2048, hardware=hw8)
for _rep in range(2):
    for name, m, h, gb, bs in (("llama2-7b/8/36GB", mp8, hw8, 36, 64), ("llama2-70b/1024/80GB", mp, hw, 80, 1024)):
        for sel in (False, True):
            t = time.perf_counter()
            c0 = time.process_time()
            r = galvatron.search(m, h, memory_gb=gb, global_batch_size=bs, num_threads=1, uniform_baseline=False,
                                 allow_selective_checkpoint=sel)
            print(json.dumps({"case": name, "selective": sel, "wall_s": round(time.perf_counter() - t, 3),
                              "cpu_s": round(time.process_time() - c0, 3), "search_time_s": round(r.search_time_s, 3),
                              "samples_per_s": round(r.predicted.samples_per_s, 4), "strategies": r.stats["strategies"],
                              "load1": os.getloadavg()[0]}), flush=True)
