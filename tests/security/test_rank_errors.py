"""Issue 12, item 8: a rank started with ``MASTER_PORT`` taken, and the surviving rank after
another rank is SIGKILLed, each print one line instead of a torch/gloo traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

SMALL = ["--nproc", "2", "--global-batch-size", "4", "--seq-len", "32", "--model.overrides",
         '{"num_layers": 2, "hidden_size": 64}', "--pp", "1", "--parallel.hardware_preset", "cpu-gloo"]


def test_master_port_taken_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        r = subprocess.run([sys.executable, "-m", "galvatron.train", "--run-dir", str(tmp_path / "run"),
                            "--steps", "1"], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert f"MASTER_PORT {port}: the port is already in use" in r.stderr


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            out[int(env[b"RANK"])] = int(entry)
        except (OSError, ValueError, KeyError, IndexError):
            continue
    return out


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the ranks")
def test_surviving_rank_prints_one_line_when_another_rank_is_killed(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "galvatron.train", "--run-dir", str(run), *SMALL, "--steps", "100000",
           "--checkpoint.every", "0"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.1)
        ranks = _rank_pids(p.pid)
        assert set(ranks) == {0, 1}, (ranks, p.poll())
        os.kill(ranks[1], signal.SIGKILL)
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode != 0
    assert "rank 1 exited with code -9" in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
