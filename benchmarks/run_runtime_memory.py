"""Measured (MemTracker) vs predicted (galvatron.estimate) per-rank memory of runtime plans.

Usage: ``python benchmarks/run_runtime_memory.py [--world 2]`` -- prints JSON lines, one per
(rank, plan): measured parameter/gradient/optimizer bytes after a step, parameter bytes and
activation bytes at the step's peak, and the cost model's stage memory (fp32, seq 16).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.distributed.test_runtime_memory import compare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    args = ap.parse_args()
    for rank, key, meas, pred in compare(args.world):
        print(json.dumps({"rank": rank, "plan": key, "measured": meas, "predicted": pred}))


if __name__ == "__main__":
    main()
