"""The training job under faults, end to end (2 local gloo ranks, a tiny GPT): a second job on a
busy run directory, a killed launcher, a planted checkpoint on --resume, a full disk during a
checkpoint, NaN training, and a resume with nothing intact. One killed job is the starting
point of every case (copied per test), so the launches stay few."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.security.attacks import flip_bytes, plant_pickle_payload

SMALL = ["--nproc", "2", "--global-batch-size", "8", "--seq-len", "32", "--model.overrides",
         '{"num_layers": 2, "hidden_size": 64}', "--optim.warmup_steps", "2", "--pp", "1",
         "--parallel.hardware_preset", "cpu-gloo", "--checkpoint.keep", "20"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def cmd(run_dir, *args):
    return [sys.executable, "-m", "galvatron.train", "--run-dir", str(run_dir), *SMALL, *args]


def train(run_dir, *args, env=None, timeout=300):
    return subprocess.run(cmd(run_dir, *args), capture_output=True, text=True, timeout=timeout, env=env or ENV)


def steps(run_dir) -> list[int]:
    root = os.path.join(run_dir, "checkpoints")
    return sorted(int(n[5:]) for n in os.listdir(root) if n.startswith("step_") and "." not in n)


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d))
    return out


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """Job A trains with a checkpoint every 2 steps; while it runs, job B is started on the same
    run directory; then only A's launcher is SIGKILLed."""
    run = tmp_path_factory.mktemp("jobs") / "run"
    a = subprocess.Popen(cmd(run, "--steps", "100000", "--checkpoint.every", "2"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=ENV)
    info = {"run": run, "launcher": a.pid}
    try:
        deadline = time.monotonic() + 240
        while not (os.path.isdir(run / "checkpoints") and len(steps(run)) >= 2):
            assert a.poll() is None and time.monotonic() < deadline, "job A did not checkpoint"
            time.sleep(0.5)
        info["ranks"] = children(a.pid)
        config_before = (run / "config.yaml").read_bytes()
        t0 = time.monotonic()
        b = train(run, "--steps", "2", timeout=120)
        info["second"] = (b.returncode, b.stderr, time.monotonic() - t0, (run / "config.yaml").read_bytes() == config_before)
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in info["ranks"]):
        time.sleep(0.2)
    info["orphans"] = [p for p in info["ranks"] if _alive(p)]
    for p in info["orphans"]:
        os.kill(p, signal.SIGKILL)
    info["steps"] = steps(run)
    return info


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def run_copy(killed_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(killed_run["run"], dst, ignore=shutil.ignore_patterns("*.partial"))
    return dst


def test_a_second_job_on_a_busy_run_directory_exits_at_once_naming_the_holder(killed_run):
    code, stderr, _seconds, config_untouched = killed_run["second"]
    assert code == 2 and f"in use by another job (pid {killed_run['launcher']} " in stderr, stderr
    assert config_untouched and "Traceback" not in stderr


def test_the_ranks_die_with_their_killed_launcher(killed_run):
    assert len(killed_run["ranks"]) == 2
    assert killed_run["orphans"] == [], "ranks kept running after their launcher was killed"


def test_a_planted_checkpoint_runs_no_code_and_a_full_disk_is_one_clear_error(run_copy, tmp_path):
    last = steps(run_copy)[-1]
    marker = tmp_path / "PWNED"
    plant_pickle_payload(str(run_copy / "checkpoints" / f"step_{last:08d}"), str(marker))
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent("""
        import errno, os
        if os.environ.get("RANK") is not None:  # the ranks: the disk fills up at one checkpoint
            from torch.distributed.checkpoint import FileSystemWriter
            real = FileSystemWriter.write_data

            def write_data(self, plan, planner):
                if os.environ["FULL_AT"] in str(self.path):
                    with open(os.path.join(self.path, f"__junk{os.environ['RANK']}"), "wb") as f:
                        f.write(b"x" * 4096)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(self, plan, planner)

            FileSystemWriter.write_data = write_data
    """))
    env = dict(ENV, PYTHONPATH=os.pathsep.join([str(hook), ENV.get("PYTHONPATH", "")]),
               FULL_AT=f"step_{last + 2:08d}")
    before = {s: sorted(os.listdir(run_copy / "checkpoints" / f"step_{s:08d}")) for s in steps(run_copy)}
    r = train(run_copy, "--resume", "--steps", str(last + 4), "--checkpoint.every", "1", env=env)
    out = r.stdout + r.stderr
    assert not marker.exists(), "the planted checkpoint ran code"
    assert f"resumed from {run_copy / 'checkpoints' / f'step_{last:08d}'}" in out, out
    assert r.returncode != 0 and "Traceback" not in out, out
    assert f"cannot write the checkpoint of step {last + 2}" in out and "no space left on device" in out, out
    assert not any(n.endswith(".partial") for n in os.listdir(run_copy / "checkpoints"))
    assert steps(run_copy) == sorted([*before, last + 1])  # earlier ones intact, the failed one gone
    for s, names in before.items():
        assert sorted(os.listdir(run_copy / "checkpoints" / f"step_{s:08d}")) == names


def test_nan_training_stops_naming_the_step_and_never_checkpoints_it(run_copy):
    last = steps(run_copy)[-1]
    r = train(run_copy, "--resume", "--steps", str(last + 6), "--checkpoint.every", "1",
              "--optim.lr", "1e9", "--optim.warmup_steps", "0")
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out, out
    with open(run_copy / "metrics.jsonl") as f:
        rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl")) for line in f]
    bad = next(r["step"] for r in rows if r.get("nonfinite"))
    assert f"step {bad}: non-finite" in out and rows[-1]["step"] == bad, out
    assert all(s < bad for s in steps(run_copy)), "a non-finite state was checkpointed"


def test_a_resume_with_no_intact_checkpoint_is_refused_and_changes_nothing(run_copy):
    files = {n: (run_copy / n).read_bytes() for n in ("config.yaml", "plan.json", "metrics.jsonl")}
    for s in steps(run_copy):
        ckpt = run_copy / "checkpoints" / f"step_{s:08d}"
        flip_bytes(str(ckpt / next(n for n in sorted(os.listdir(ckpt)) if n.endswith(".distcp"))))
    r = train(run_copy, "--resume", "--steps", "50", "--seed", "9", "--global-batch-size", "4")
    assert r.returncode == 2 and "no intact checkpoint" in r.stderr, r.stderr
    assert all(f"step_{s:08d}: __" in r.stderr for s in steps(run_copy)), r.stderr
    for s in steps(run_copy):  # nothing intact: the launcher refuses before starting any rank
        os.remove(run_copy / "checkpoints" / f"step_{s:08d}" / "COMMIT")
    r = train(run_copy, "--resume", "--steps", "50", "--seed", "9")
    assert r.returncode == 2 and "no intact checkpoint" in r.stderr and "no COMMIT" in r.stderr, r.stderr
    assert {n: (run_copy / n).read_bytes() for n in files} == files
