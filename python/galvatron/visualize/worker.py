"""Bounded search workers for ``galvatron visualize --serve``.

Each request's search runs in a separate process (forked from a ``forkserver`` that has the
package imported, so a fork costs milliseconds), with a data-segment limit (``RLIMIT_DATA``:
heap and anonymous mappings) and a wall-clock timeout after which it is killed. A request that
would need more memory or time than that gets a one-line error; the server process itself
never grows with a request, and other clients are served meanwhile.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

_CTX_LOCK = threading.Lock()
_CTX: Any = None


def _context() -> Any:
    global _CTX
    with _CTX_LOCK:
        if _CTX is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["galvatron.visualize.server"])
            _CTX = ctx
        return _CTX


def _limit_memory(limit_bytes: int) -> None:
    if limit_bytes <= 0:
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, hard))


def _main(conn: Any, job: Callable[[Any, Any], Any], params: Any, cfg: Any, memory_bytes: int) -> None:
    """Worker body: ``job(params, cfg)``, send ("ok", data) / ("error", message) / ("internal", name)."""
    try:
        _limit_memory(memory_bytes)
        conn.send(("ok", job(params, cfg)))
    except ValueError as e:
        conn.send(("error", str(e)))
    except MemoryError:
        conn.send(("memory", ""))
    except Exception as e:  # the page gets one line; the console gets the traceback
        traceback.print_exc(file=sys.stderr)
        conn.send(("internal", type(e).__name__))
    finally:
        conn.close()


class WorkerError(Exception):
    """A search that could not finish within the worker's bounds; ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def search_in_worker(job: Callable[[Any, Any], Any], params: Any, cfg: Any, timeout_s: float,
                     memory_bytes: int) -> dict[str, Any]:
    """``job(params, cfg)`` (a module-level function, e.g. the server's ``run_search``) in a fresh
    bounded process. Raises ``ValueError`` for bad
    input (the worker's message) and :class:`WorkerError` past the time or memory bound."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_main, args=(send, job, params, cfg, memory_bytes), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout_s):
            raise WorkerError(503, f"the search did not finish within the {timeout_s:g} s limit of --serve; "
                                   "narrow it: a smaller global batch size, sequence length or device count")
        try:
            kind, payload = recv.recv()
        except EOFError:  # killed (e.g. by the kernel) before it could answer
            kind, payload = "memory", ""
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        recv.close()
    if kind == "ok":
        return payload
    if kind == "error":
        raise ValueError(payload)
    if kind == "memory":
        raise WorkerError(503, f"the search needed more than the {memory_bytes / 2**30:g} GiB memory limit of "
                               "--serve; narrow it: a smaller global batch size, sequence length or device count")
    raise WorkerError(500, f"internal error ({payload}); see the server console")
