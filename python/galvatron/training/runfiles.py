"""The run files the ranks read (``config.yaml``, ``plan.json``), written so that a run that is
refused never replaces those of the run before it.

A fresh run writes them in place. A resumed run writes them into ``RUN/.pending/``; the ranks
read the pending ones, and rank 0 moves them into place only once the checkpoint has been
verified and loaded (:func:`accept`). A resume that is refused (no intact checkpoint, a
checkpoint of another model) leaves ``RUN/config.yaml`` and ``RUN/plan.json`` as they were.
"""

from __future__ import annotations

import os
import shutil

from galvatron._io import atomic_write_text

PENDING = ".pending"
NAMES = ("config.yaml", "plan.json")


def start(run_dir: str) -> None:
    """Before a run writes its files: forget the pending files of an earlier refused run."""
    shutil.rmtree(os.path.join(run_dir, PENDING), ignore_errors=True)


def write(run_dir: str, name: str, text: str, pending: bool) -> None:
    directory = os.path.join(run_dir, PENDING) if pending else run_dir
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{directory}: cannot create: {e.strerror or e}") from None
    atomic_write_text(os.path.join(directory, name), text)


def path(run_dir: str, name: str) -> str:
    """Where the ranks read ``name``: the pending version when there is one."""
    pending = os.path.join(run_dir, PENDING, name)
    return pending if os.path.exists(pending) else os.path.join(run_dir, name)


def accept(run_dir: str) -> None:
    """The run is accepted: its pending files replace the previous run's."""
    pending = os.path.join(run_dir, PENDING)
    if not os.path.isdir(pending):
        return
    for name in NAMES:
        src = os.path.join(pending, name)
        if os.path.exists(src):
            os.replace(src, os.path.join(run_dir, name))
    shutil.rmtree(pending, ignore_errors=True)
