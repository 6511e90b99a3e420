"""One-line errors for a rank's process-group failures.

Two failures print dozens of lines of torch/gloo traceback where one line belongs:

- starting the process group when ``MASTER_PORT`` is taken (rank 0 cannot listen) or the
  master cannot be reached: :func:`start_error` turns it into a ``ValueError`` naming
  ``MASTER_ADDR:MASTER_PORT`` and what to do;
- a collective failing because another rank died (killed, out of memory): the surviving ranks
  get a ``DistError``/gloo ``RuntimeError``; :func:`lost_peer_message` gives the one line they
  print before exiting with :data:`LOST_PEER_EXIT` (the launcher names the rank that died).
"""

from __future__ import annotations

import os

LOST_PEER_EXIT = 3
_PEER_HINTS = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "timed out",
               "peer", "socket", "ecconnreset", "econnreset")


def start_error(exc: BaseException) -> ValueError:
    """The ``ValueError`` for a failed ``init_process_group``."""
    addr = os.environ.get("MASTER_ADDR", "?")
    port = os.environ.get("MASTER_PORT", "?")
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if "EADDRINUSE" in text or "address already in use" in text.lower():
        return ValueError(f"MASTER_PORT {port}: the port is already in use on {addr}; choose a free port "
                          "(or let the local launcher pick one by not setting MASTER_PORT)")
    return ValueError(f"cannot start the process group at MASTER_ADDR={addr} MASTER_PORT={port}: "
                      f"{text[:300]}")


def is_lost_peer(exc: BaseException) -> bool:
    """True for the errors a collective raises when another rank has gone away."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(h in text for h in _PEER_HINTS)


def lost_peer_message(rank: int, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return (f"galvatron: rank {rank}: lost contact with another rank ({first}); stopping. The launcher "
            "names the rank that failed first; see its log.")
