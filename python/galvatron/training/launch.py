"""Starting the ranks: under ``torchrun`` (environment variables set) use them; otherwise start
``nproc`` local processes, each running the same command with RANK/WORLD_SIZE set, and stop
all of them promptly when one fails (no hang until a collective times out).

Ranks started here die with the launcher: :func:`die_with_launcher` (called first thing by a
rank) asks the kernel for SIGKILL when the launcher exits (Linux ``PR_SET_PDEATHSIG``), or
elsewhere watches the launcher's pid from a thread. Under torchrun nothing changes: torchrun's
own semantics hold (the variable that names the launcher is not set)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def under_launcher() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


LAUNCHER_PID = "GALVATRON_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def die_with_launcher(poll_s: float = 1.0) -> None:
    """In a rank started by :func:`spawn`: be killed when the launcher exits, however it exits.
    A no-op in processes :func:`spawn` did not start (e.g. under torchrun)."""
    value = os.environ.get(LAUNCHER_PID, "")
    if not value.isdigit():
        return
    launcher = int(value)
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != launcher:  # the launcher died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    if not armed:
        def watch() -> None:
            while True:
                time.sleep(poll_s)
                if os.getppid() != launcher:
                    os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="galvatron-launcher-watchdog", daemon=True).start()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(nproc: int, argv: list[str], log_dir: str, timeout_s: float | None = None) -> int:
    """Run `python argv...` as `nproc` ranks; rank 0 prints to this terminal, the others to
    `log_dir/rank{r}.log`. Returns 0, or the failing rank's exit code after stopping the rest.
    SIGINT/SIGTERM are forwarded so the ranks can checkpoint and exit (0 when they all do)."""
    os.makedirs(log_dir, exist_ok=True)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(nproc),
               **{LAUNCHER_PID: str(os.getpid())})
    if (os.cpu_count() or 1) < nproc * 2:
        env.setdefault("OMP_NUM_THREADS", "1")
    procs, logs = [], []
    for r in range(nproc):
        renv = dict(env, RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(nproc))
        out = None
        if r > 0:
            out = open(os.path.join(log_dir, f"rank{r}.log"), "w", encoding="utf-8")  # noqa: SIM115
            logs.append(out)
        procs.append(subprocess.Popen([sys.executable, *argv], env=renv, stdout=out,
                                      stderr=subprocess.STDOUT if out else None))
    forwarded = {"sig": None}

    def forward(sig, _frame):
        forwarded["sig"] = sig
        for p in procs:
            if p.poll() is None:
                p.send_signal(sig)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    start = time.monotonic()
    code = 0
    try:
        while True:
            states = [p.poll() for p in procs]
            failed = [(r, c) for r, c in enumerate(states) if c not in (None, 0)]
            if failed:
                r, code = failed[0]
                where = "above" if r == 0 else os.path.join(log_dir, f"rank{r}.log")
                print(f"galvatron: rank {r} exited with code {code}; stopping the other ranks (its log: {where})",
                      file=sys.stderr)
                _stop(procs)
                if r > 0:
                    _print_tail(os.path.join(log_dir, f"rank{r}.log"))
                break
            if all(c == 0 for c in states):
                break
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                print(f"galvatron: the ranks did not finish within {timeout_s:.0f} s; stopping them", file=sys.stderr)
                _stop(procs)
                code = 124
                break
            time.sleep(0.05)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for f in logs:
            f.close()
    return code


def _stop(procs, grace_s: float = 5.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _print_tail(path: str, lines: int = 20) -> None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            tail = f.readlines()[-lines:]
    except OSError:
        return
    sys.stderr.write("".join(tail))
