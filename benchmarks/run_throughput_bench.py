"""Single-device training throughput and MFU of a ~1B-parameter LLaMA (the GPU part of the
runtime issue). Prints one JSON line per attention backend.

Usage (on a GPU)::

    python benchmarks/run_throughput_bench.py                      # llama ~1B, bf16, SDPA (+ flash-attn)
    python benchmarks/run_throughput_bench.py --out benchmarks/results/throughput_gpu_DATE.jsonl

On CPU it runs a tiny smoke configuration (``--model llama-debug``) so the script itself is
tested; CPU numbers are not a throughput claim. MFU = model FLOPs per second (3x the spec's
forward FLOPs: recomputation not counted) / the device's peak for the dtype (datasheet peaks
of A100 / H100 / H200; ``--peak-tflops`` for others).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

# ~1.0B parameters: LLaMA-2 shapes at hidden 2048 (16 layers, 16 heads, SwiGLU 5632)
ONE_B = dict(hidden_size=2048, num_layers=16, num_heads=16, num_kv_heads=16, ffn_hidden=5632)


def _peak(device: torch.device, dtype: str, given: float | None) -> float | None:
    if given:
        return given
    if device.type != "cuda":
        return None
    from galvatron.profiles.presets import datasheet_peak_tflops

    return datasheet_peak_tflops(torch.cuda.get_device_name(device), dtype)


def _backends(device: torch.device) -> list[str]:
    out = ["sdpa"]
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401

            out.append("auto")  # auto = flash-attn when installed and applicable
        except ImportError:
            pass
    return out


def run(model: str, overrides: dict, batch: int, seq: int, steps: int, dtype: str,
        device: torch.device, backend: str, peak: float | None) -> dict:
    from galvatron import models

    torch.manual_seed(0)
    m = models.build(model, seed=0, attn_backend=backend, **overrides).to(device)
    spec = models.spec(models.get_config(model, **overrides))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=device.type == "cuda")
    vocab = m.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 3):
        sync()
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = m.loss(m(input_ids=ids), {"labels": ids})
        loss.backward()
        opt.step()
        sync()
        if i >= 3:  # warm-up (allocator, kernels)
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    flops = 3.0 * spec.flops_fwd(batch, seq)
    out = {"model": model, **overrides, "params": sum(p.numel() for p in m.parameters()),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "dtype": dtype, "attn_backend": backend, "batch": batch, "seq": seq, "steps": steps,
           "median_step_s": step, "tokens_per_s": round(batch * seq / step, 1),
           "model_tflops_per_s": flops / step / 1e12, "loss": float(loss.detach())}
    if peak:
        out["peak_tflops"] = peak
        out["mfu"] = flops / step / 1e12 / peak
    if device.type == "cuda":
        out["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated(device))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: llama2-7b shapes scaled to ~1B on CUDA, "
                                                  "llama-debug on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 8 on CUDA, 2 on CPU")
    ap.add_argument("--seq", type=int, default=None, help="default 2048 on CUDA, 64 on CPU")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for the MFU")
    ap.add_argument("--out", help="append the JSON lines to this file too")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    model = args.model or ("llama2-7b" if cuda else "llama-debug")
    overrides = ONE_B if model == "llama2-7b" and args.model is None else {}
    batch, seq = args.batch or (8 if cuda else 2), args.seq or (2048 if cuda else 64)
    peak = _peak(device, args.dtype, args.peak_tflops)
    for backend in _backends(device):
        res = run(model, overrides, batch, seq, args.steps, args.dtype, device, backend, peak)
        line = json.dumps(res)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
