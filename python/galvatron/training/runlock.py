"""An exclusive lock on a run directory, so that two jobs never train into the same one.

The launcher takes it before it writes anything into the run directory and holds it for the
whole job (the local launcher: until its ranks have exited; under ``torchrun``: rank 0, for its
lifetime). It is an advisory ``flock`` on ``RUN/.lock``: the kernel releases it when the holding
process exits for any reason, so the lock of a dead job is never in the way (its stale pid in
the file is reported as such and replaced). A second job exits at once with a message naming
the holder's pid. The file descriptor is not inherited by the ranks.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(run_dir): ...`` or ``lock = RunLock(run_dir).acquire()`` / ``lock.release()``."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._fd: int | None = None
        self.stale: str | None = None  # what a dead holder had written, when there was one

    def acquire(self) -> RunLock:
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ValueError(f"run_dir {self.run_dir}: not writable: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise busy_error(self.run_dir, holder or "pid unknown") from None
            raise ValueError(f"run_dir {self.run_dir}: cannot lock {self.path}: {e.strerror or e} "
                             "(a file system without locks?)") from None
        previous = _read(fd)
        if previous:
            self.stale = previous  # we hold the lock, so whoever wrote this is gone
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def busy_holder(run_dir: str) -> str | None:
    """What the job holding ``run_dir``'s lock wrote (``"pid unknown"`` if nothing), or None when
    no live job holds it. Probes without taking or changing the lock file."""
    try:
        fd = os.open(os.path.join(run_dir, LOCK_NAME), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return _read(fd) or "pid unknown"
        return None
    finally:
        os.close(fd)  # also drops the probe's shared lock
    return None


def busy_error(run_dir: str, holder: str) -> ValueError:
    return ValueError(f"run directory {run_dir} is in use by another job ({holder}); "
                      "wait for it to finish, stop it, or use another --run-dir")


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


__all__ = ["LOCK_NAME", "RunLock", "busy_error", "busy_holder"]
