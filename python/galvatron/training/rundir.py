"""Where a run lives, so that no run overwrites another.

Without ``--run-dir`` every run gets a fresh ``runs/<model>-<YYYYmmdd-HHMMSS>`` and the link
``runs/latest`` is pointed at it; ``--resume`` without ``--run-dir`` continues ``runs/latest``.
A named run directory that already holds a run is used only with ``--resume``; otherwise the
job stops and says both ways forward.
"""

from __future__ import annotations

import os
import time

RUNS = "runs"
_MARKERS = ("config.yaml", "plan.json", "metrics.jsonl", "checkpoints")


def holds_a_run(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _MARKERS)


def fresh_run_dir(model: str, root: str = RUNS, now: float | None = None) -> str:
    """``root/<model>-<local time>`` that does not exist yet (``-2``, ``-3``, ... on a clash)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = os.path.join(root, f"{model}-{stamp}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path


def point_latest(run_dir: str, root: str = RUNS) -> None:
    """Make ``root/latest`` a relative link to ``run_dir`` (replaced atomically)."""
    link = os.path.join(root, "latest")
    tmp = f"{link}.tmp{os.getpid()}"
    try:
        os.symlink(os.path.relpath(os.path.abspath(run_dir), os.path.abspath(root)), tmp)
        os.replace(tmp, link)
    except OSError:  # e.g. a file system without links: the run itself is unaffected
        if os.path.lexists(tmp):
            os.remove(tmp)


def resolve_run_dir(run_dir: str, model: str, resume: bool, root: str = RUNS) -> tuple[str, bool]:
    """The run directory to use and whether it is a fresh one (``runs/latest`` then points at
    it). Raises ValueError for a run directory that holds a run without ``resume``, and for
    ``resume`` with nothing to resume."""
    if not run_dir:
        if resume:
            latest = os.path.join(root, "latest")
            if not os.path.isdir(latest):
                raise ValueError(f"--resume: no --run-dir given and no {latest} to continue; "
                                 "name the run to resume with --run-dir")
            return os.path.join(root, os.readlink(latest)) if os.path.islink(latest) else latest, False
        return fresh_run_dir(model, root), True
    if holds_a_run(run_dir) and not resume:
        from galvatron.training.runlock import busy_error, busy_holder

        holder = busy_holder(run_dir)  # a job still running there: say so (and who) first
        if holder is not None:
            raise busy_error(run_dir, holder)
        raise ValueError(f"run_dir {run_dir} already holds a run; pass --resume to continue it, or choose "
                         "another --run-dir (or none: each run then gets a fresh runs/<model>-<time>)")
    return run_dir, False
