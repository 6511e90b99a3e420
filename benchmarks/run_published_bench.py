#!/usr/bin/env python3
"""The cost model against published GPU runs: predicted vs published throughput (and memory).

Each row of ``benchmarks/published/gpu_runs.json`` (copied, with sources, from
``../shared/reference/published/``) is built as a plan on the matching hardware preset and
analytic model profile and evaluated with ``galvatron.estimate``. One JSON line per row, then a
summary line (median and worst absolute error over the headline rows). Rows that used something
the plan cannot express (``unmodelled``) are reported but kept out of the headline.

    python benchmarks/run_published_bench.py [--out benchmarks/results/published_bench_DATE.jsonl]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys

import galvatron
from galvatron.plan import Plan

HERE = os.path.dirname(os.path.abspath(__file__))
GiB = 2**30


def megatron_row(r: dict) -> dict:
    """SC'21 Table 1: GPT, vocab 51200, seq 2048, fp16, micro-batch 1, recomputation, tp x pp x dp,
    interleaved 1F1B when pp > 1 (virtual stages not published: the smallest v > 1 dividing the
    layers of a stage), fused kernels and explicit-softmax attention (Megatron-LM 2021)."""
    h, layers, heads, tp, pp, n, batch = (r[k] for k in ("hidden", "layers", "heads", "tp", "pp", "gpus", "global_batch"))
    seq, vocab = 2048, 51200
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=n // 8, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2", seq_len=seq, hardware=hw, precision="fp16", max_degree=8,
                                 kernels="fused", attention="math", hidden_size=h, num_layers=layers,
                                 num_heads=heads, ffn_hidden=4 * h, vocab_size=vocab, max_seq_len=seq,
                                 tie_word_embeddings=True, dropout=0.1)
    dp = n // (tp * pp)
    m = batch // dp
    v = 1
    if pp > 1:
        v = next((k for k in range(2, layers // pp + 1) if (layers // pp) % k == 0), 1)
    plan = Plan.uniform(n, layers, pp=pp, tp=tp, checkpoint=True, num_microbatches=m, global_batch_size=batch,
                        schedule="interleaved_1f1b" if v > 1 else "1f1b", virtual_stages=v, precision="fp16")
    pred = galvatron.estimate(plan, mp, hw)
    flops = 96 * batch * seq * layers * h * h * (1 + seq / (6 * h) + vocab / (16 * layers * h))
    predicted = flops / (pred.step_time_s * n) / 1e12
    return {"metric": "tflops_per_gpu", "published": r["tflops_per_gpu"], "predicted": predicted,
            "plan": f"tp{tp} pp{pp} dp{dp} m{m} v{v} recompute", "unmodelled": [],
            "prediction": pred}


TORCHTITAN_CHECKPOINT = {"selective-op": "selective", "full": True, "none": False}


def torchtitan_row(r: dict) -> dict:
    """torchtitan, FSDP2 (ZeRO-3) only, bf16 (FSDP2 gathers bf16 and reduce-scatters fp32): the Dec-2024
    Llama 3.1 8B runs on the 96 GB HBM2e 500 W H100 (seq 8192, local batch 2) and the 2024 runs on
    64 A100 80GB (``hardware``, ``seq_len``, ``local_batch`` in the row). Activation checkpointing
    as published: "selective-op" is torchtitan's op-level policy (the plan's selective mode with
    every second matmul of a block recomputed, ``selective_matmuls="every_other"``), "full", or
    "none". ``tp`` > 1: torchtitan's 2D parallelism, tensor parallel with sequence parallel
    (Megatron-SP) inside FSDP. torch.compile is modelled only as fused memory-bound kernels; Float8
    and async TP are not modelled (those rows stay out of the headline)."""
    n, batch, tp = r["gpus"], r["global_batch"], r.get("tp", 1)
    seq, preset = r.get("seq_len", 8192), r.get("hardware", "h100-96g-hbm2e-500w")
    ac = r.get("activation_checkpointing", "selective-op")
    if ac not in TORCHTITAN_CHECKPOINT:
        raise ValueError(f"activation_checkpointing: {ac!r} is not accepted; accepted: "
                         + ", ".join(repr(k) for k in TORCHTITAN_CHECKPOINT))
    hw = galvatron.hardware_preset(preset, num_nodes=max(1, n // 8), gpus_per_node=min(8, n))
    mp = galvatron.model_profile(r["model"], seq_len=seq, hardware=hw, max_degree=tp,
                                 kernels="fused" if r["torch_compile"] else "eager", max_seq_len=seq,
                                 selective_matmuls="every_other" if ac == "selective-op" else "keep")
    plan = Plan.uniform(n, mp.num_layers, tp=tp, sp_kind="megatron" if tp > 1 else None, dp_type="zero3",
                        checkpoint=TORCHTITAN_CHECKPOINT[ac], num_microbatches=1, global_batch_size=batch)
    pred = galvatron.estimate(plan, mp, hw)
    unmodelled = ["torch.compile (modelled only as fused memory-bound kernels)"] if r["torch_compile"] else []
    if r.get("float8"):
        unmodelled.append("Float8 linear layers (torchao): GEMMs priced in bf16")
    if r.get("async_tp"):
        unmodelled.append("async tensor parallel: tp collectives priced as blocking")
    approximations = ["ZeRO-3 gathers bf16 copies and reduce-scatters fp32 (FSDP2 MixedPrecisionPolicy, as "
                      "the bf16 plan charges them)"]
    if ac == "selective-op":
        approximations.append("torchtitan's op-level selective checkpointing: its recompute (every second matmul "
                              "of a block and the memory-bound operators) is charged; the kept activations are the "
                              "plan's selective mode (every matmul output), an upper bound of torchtitan's")
    return {"metric": "tokens_per_s_per_gpu", "published": r["tokens_per_s_per_gpu"],
            "predicted": batch * seq / pred.step_time_s / n,
            "plan": f"zero3 dp{n // tp}{f' tp{tp} megatron-sp' if tp > 1 else ''} local batch {batch * tp // n} "
                    f"checkpoint {ac} on {preset}",
            "unmodelled": unmodelled, "prediction": pred, "approximations": approximations,
            "published_memory_gib": r.get("peak_memory_gib")}


def evaluate(r: dict) -> dict:
    if r["source"] == "megatron-sc21":
        out = megatron_row(r)
        name = f"megatron-sc21 GPT {r['params_b']}B on {r['gpus']}"
    elif r["source"].startswith("torchtitan"):
        out = torchtitan_row(r)
        name = (f"torchtitan {r['model']} {r['parallel']}{' compile' if r['torch_compile'] else ''}"
                + (" float8" if r.get("float8") else "") + (" asyncTP" if r.get("async_tp") else "")
                + (f" {r.get('activation_checkpointing')} A100" if r.get("hardware", "").startswith("a100") else ""))
    else:
        raise ValueError(f"source {r['source']!r}: no builder")
    pred = out.pop("prediction")
    out = {"row": name, **out}
    out.setdefault("headline", not out["unmodelled"])
    out["set"] = r.get("set", "shared")  # "shared": from ../shared/reference/published; "added": sourced here
    out["error"] = out["predicted"] / out["published"] - 1
    out["predicted_memory_gib"] = pred.max_peak_memory_bytes / GiB
    # What the caching allocator holds at the peak (allocated bytes; its reserve beyond them is not
    # modelled): the predicted peak less the memory used outside it (CUDA context, NCCL buffers).
    # torchtitan publishes torch.cuda.max_memory_reserved, so its rows compare with this.
    out["predicted_allocator_gib"] = max(m["total_bytes"] - m["buffer_bytes"] - m["overhead_bytes"]
                                         for m in pred.stage_memory) / GiB
    if out.get("published_memory_gib"):
        out["memory_error"] = out["predicted_allocator_gib"] / out["published_memory_gib"] - 1
    out["breakdown_ms"] = {k: round(v, 1) for k, v in pred.breakdown_ms.items()}
    out["step_time_s"] = pred.step_time_s
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default=os.path.join(HERE, "published", "gpu_runs.json"))
    ap.add_argument("--out", default=None, help="also write the JSON lines to this file")
    args = ap.parse_args()
    with open(args.rows, encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    meta = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "galvatron": galvatron.__version__, "command": " ".join(sys.argv)}
    lines = [{"meta": meta}]
    print(f"{'row':<52} {'published':>10} {'predicted':>10} {'error':>8}  memory GiB (published reserved / predicted in the allocator)")
    for r in rows:
        out = evaluate(r)
        lines.append(out)
        mem = (f"{out['published_memory_gib']:.1f}/{out['predicted_allocator_gib']:.1f}"
               if out.get("published_memory_gib") else f"-/{out['predicted_allocator_gib']:.1f}")
        flag = "" if out["headline"] else "  (not in headline: " + "; ".join(out["unmodelled"])[:60] + "...)"
        print(f"{out['row']:<52} {out['published']:>10.0f} {out['predicted']:>10.1f} {out['error'] * 100:>+7.1f}%  {mem}{flag}")
    head = [abs(x["error"]) for x in lines[1:] if x["headline"]]
    shared = [abs(x["error"]) for x in lines[1:] if x["headline"] and x["set"] == "shared"]
    added = [abs(x["error"]) for x in lines[1:] if x["headline"] and x["set"] == "added"]
    every = [abs(x["error"]) for x in lines[1:]]
    summary = {"summary": True, "headline_rows": len(head), "median_abs_error": statistics.median(head),
               "worst_abs_error": max(head), "all_rows_median_abs_error": statistics.median(every),
               "all_rows_worst_abs_error": max(every)}
    for name, errs in (("shared", shared), ("added", added)):
        if errs:
            summary[f"{name}_headline_rows"] = len(errs)
            summary[f"{name}_median_abs_error"] = statistics.median(errs)
            summary[f"{name}_worst_abs_error"] = max(errs)
    lines.append(summary)
    print(f"headline rows {len(head)}: median |error| {summary['median_abs_error'] * 100:.1f}%, worst "
          f"{summary['worst_abs_error'] * 100:.1f}%; all {len(every)} rows: median "
          f"{summary['all_rows_median_abs_error'] * 100:.1f}%, worst {summary['all_rows_worst_abs_error'] * 100:.1f}%")
    for name in ("shared", "added"):
        if f"{name}_headline_rows" in summary:
            print(f"  {name} rows in the headline {summary[name + '_headline_rows']}: median |error| "
                  f"{summary[name + '_median_abs_error'] * 100:.1f}%, worst {summary[name + '_worst_abs_error'] * 100:.1f}%")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
