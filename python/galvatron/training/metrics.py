"""Metrics as JSON lines (one object per optimizer step) and a one-line progress display."""

from __future__ import annotations

import json
import math
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
            with open(self.path, encoding="utf-8", errors="replace") as f:
                kept = [line for line in f if _step_of(line) <= resume_step]  # a torn last line is dropped
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


def read_rows(path: str) -> list[dict[str, Any]]:
    """The metrics lines of ``path`` that are JSON objects (a torn line from a kill is skipped)."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
    return rows


def _step_of(line: str) -> float:
    """The step of a metrics line; infinity for a line that is not a JSON object with a step."""
    try:
        row = json.loads(line)
    except ValueError:
        return math.inf
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else math.inf


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
