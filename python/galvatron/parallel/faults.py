"""Fail fast: an exception on one rank ends every rank promptly with that error.

A rank that raises while its peers wait in a collective would leave them blocked until the
process-group timeout. ``with fail_fast(): ...`` prints the traceback (prefixed with the rank)
and exits the process at once; gloo/NCCL peers then see their connection closed and raise, and
``torchrun`` tears the job down with the first failure's exit code."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback


@contextlib.contextmanager
def fail_fast(exit_code: int = 1, report=None):
    """Run the body; on any exception print it (or call ``report(traceback_text)``) and
    ``os._exit(exit_code)`` without waiting for other ranks."""
    try:
        yield
    except BaseException:  # noqa: BLE001 - every failure must end the rank
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_initialized() else "?"
        text = traceback.format_exc()
        if report is not None:
            report(text)
        else:
            sys.stderr.write(f"[rank {rank}] {text}")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(exit_code)
