#!/usr/bin/env python3
"""Which term a published row's gap lies in: the share of the predicted step that is
tensor-core work, and the factor on that work that would close the gap to the published step.

Tensor-core work counted here: the weight GEMMs of the transformer layers (forward, backward,
the recomputed forward under full checkpointing, torchtitan's recomputed every-other matmul) and
the fused attention kernel (flash rows); not the LM head, not the explicit-softmax attention
products of the Megatron rows (a lower bound of the share). Reads a result file of
``run_published_bench.py`` and the rows it was made from.

    python benchmarks/published_terms.py benchmarks/results/published_bench_2026-12-03b.jsonl [--virtual-stages]

``--virtual-stages`` also prints, for each pipelined Megatron row, the error under every number of
virtual stages the layers allow (the paper does not give it; the benchmark takes the smallest > 1).
"""

from __future__ import annotations

import argparse
import json
import os

import galvatron
from galvatron import models
from galvatron.plan import Plan
from galvatron.profiles import gpu_compute as gc

HERE = os.path.dirname(os.path.abspath(__file__))


def row_setup(r: dict) -> dict:
    if r["source"] == "megatron-sc21":
        h, heads, tp, pp, n = (r[k] for k in ("hidden", "heads", "tp", "pp", "gpus"))
        return dict(preset="a100-80g-sxm", precision="fp16", seq=2048, model="gpt2", t=tp, fused=True,
                    math_path=True, dropout=True, samples=r["global_batch"] // (n // (tp * pp)),
                    layers=r["layers"] / pp, fwd_passes=2, every_other=False,
                    kw=dict(hidden_size=h, num_layers=r["layers"], num_heads=heads, ffn_hidden=4 * h,
                            vocab_size=51200, max_seq_len=2048, tie_word_embeddings=True, dropout=0.1))
    seq = r.get("seq_len", 8192)
    ac = r.get("activation_checkpointing", "selective-op")
    tp = r.get("tp", 1)
    return dict(preset=r.get("hardware", "h100-96g-hbm2e-500w"), precision="bf16", seq=seq, model=r["model"], t=tp,
                fused=r["torch_compile"], math_path=False, dropout=False, samples=r["global_batch"] * tp // r["gpus"],
                layers=None, fwd_passes=2 if ac == "full" else 1, every_other=ac == "selective-op",
                kw=dict(max_seq_len=seq))


def tensor_core_ms(s: dict) -> float:
    hw = galvatron.hardware_preset(s["preset"])
    dev = gc.Device(hw.peak_tflops[s["precision"]] * 1e12, hw.matmul_efficiency, hw.num_sms,
                    hw.memory_bandwidth_gbps * 1e9, hw.attention_efficiency)
    spec = models.spec(models.get_config(s["model"], **s["kw"]))
    ls, t = spec.layer(0), s["t"]
    m = ls.tokens(s["seq"])
    gemms = [dev.gemm_fwd_bwd_ms(m, max(1, n), max(1, k)) for n, k in gc.layer_gemms(ls, t)]
    per_layer = s["fwd_passes"] * sum(f for f, _ in gemms) + sum(b for _, b in gemms)
    if s["every_other"]:
        per_layer += sum(dev.gemm_ms(m, n, k) for n, k in gc.recomputed_gemms(ls, t, "every_other"))
    if not s["math_path"]:
        af, ab = gc.attention_ms(dev, ls, s["seq"], t, False, True, s["dropout"])
        per_layer += s["fwd_passes"] * af + ab
    layers = s["layers"] if s["layers"] is not None else len(spec.layer_types)
    return per_layer * layers * s["samples"]


def virtual_stage_errors(r: dict) -> str:
    """The Megatron row's error under each number of virtual stages (1 = plain 1F1B)."""
    h, layers, tp, pp, n, batch = (r[k] for k in ("hidden", "layers", "tp", "pp", "gpus", "global_batch"))
    s = row_setup(r)
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=n // 8, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2", seq_len=2048, hardware=hw, precision="fp16", max_degree=8, kernels="fused",
                                 attention="math", **s["kw"])
    m = batch // (n // (tp * pp))
    flops = 96 * batch * 2048 * layers * h * h * (1 + 2048 / (6 * h) + 51200 / (16 * layers * h))
    out = []
    for v in [1] + [k for k in range(2, layers // pp + 1) if (layers // pp) % k == 0]:
        plan = Plan.uniform(n, layers, pp=pp, tp=tp, checkpoint=True, num_microbatches=m, global_batch_size=batch,
                            schedule="interleaved_1f1b" if v > 1 else "1f1b", virtual_stages=v, precision="fp16")
        tflops = flops / (galvatron.estimate(plan, mp, hw).step_time_s * n) / 1e12
        out.append(f"v{v} {tflops / r['tflops_per_gpu'] - 1:+.1%}")
    return ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a JSON-lines result file of run_published_bench.py")
    ap.add_argument("--rows", default=os.path.join(HERE, "published", "gpu_runs.json"))
    ap.add_argument("--virtual-stages", action="store_true", help="Megatron rows: error for every v")
    args = ap.parse_args()
    with open(args.rows, encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    with open(args.results, encoding="utf-8") as f:
        outs = [o for o in map(json.loads, f) if "row" in o]
    if len(outs) != len(rows):
        raise ValueError(f"{args.results}: {len(outs)} result rows for {len(rows)} rows in {args.rows}")
    for r, o in zip(rows, outs, strict=True):
        step = o["step_time_s"] * 1e3
        published_step = step * (1 + o["error"])  # throughput is inverse to the step
        tc = tensor_core_ms(row_setup(r))
        print(f"{o['row']:<52} error {o['error'] * 100:+6.1f}%  tensor-core work {tc / step * 100:5.1f}% of the "
              f"step  factor on it to close the gap {1 + (published_step - step) / tc:.2f}")
        if args.virtual_stages and r["source"] == "megatron-sc21" and r["pp"] > 1:
            print(f"    virtual stages: {virtual_stage_errors(r)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
