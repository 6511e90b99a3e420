"""Metrics as JSON lines (one object per optimizer step) and a one-line progress display."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class MetricsWriter:
    """Appends to ``run_dir/metrics.jsonl`` (flushed every step, so a killed run keeps its lines).
    On resume, lines of steps after the resumed checkpoint's step are dropped first. With
    ``tensorboard``, numeric fields also go to ``run_dir/tensorboard`` (needs the tensorboard
    package)."""

    def __init__(self, run_dir: str, resume_step: int | None = None, tensorboard: bool = False):
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ModuleNotFoundError:
                raise ValueError("logging.tensorboard needs the tensorboard package: pip install tensorboard") from None
            self._tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))
        self.path = os.path.join(run_dir, "metrics.jsonl")
        if resume_step is not None and os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("step", -1) <= resume_step]
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(kept)
        elif resume_step is None and os.path.exists(self.path):
            os.remove(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        from galvatron.training.guards import json_safe

        record = json_safe(record)  # non-finite values as null: every line stays valid JSON
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


class Progress:
    """`step 12/40 | loss 3.214 | 18,432 tok/s | step 0.21 s (predicted 0.19 s)` lines."""

    def __init__(self, total: int, stream=sys.stdout):
        self.total = total
        self.stream = stream
        self.start = time.perf_counter()

    def update(self, step: int, loss: float, tokens_per_s: float, step_s: float, predicted_s: float | None,
               extra: str = "") -> None:
        pred = f" (predicted {predicted_s:.3f} s)" if predicted_s else ""
        width = 20
        done = int(width * step / max(1, self.total))
        bar = "#" * done + "." * (width - done)
        self.stream.write(f"[{bar}] step {step}/{self.total} | loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | "
                          f"step {step_s:.3f} s{pred}{extra}\n")
        self.stream.flush()
