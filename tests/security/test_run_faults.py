"""Run-directory and training faults in one process (or a tiny launcher): the run lock, ranks
dying with their launcher, the non-finite guard, valid metrics JSON, config errors naming the
file."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest


def test_a_second_job_on_a_locked_run_directory_is_refused_naming_the_holder(tmp_path):
    from galvatron.training.runlock import RunLock

    with RunLock(str(tmp_path)):
        with pytest.raises(ValueError, match=rf"in use by another job \(pid {os.getpid()} "):
            RunLock(str(tmp_path)).acquire()
    RunLock(str(tmp_path)).acquire().release()  # released on exit


def test_the_lock_of_a_killed_job_is_stale_and_replaced(tmp_path):
    from galvatron.training.runlock import RunLock

    code = ("import sys, time\nfrom galvatron.training.runlock import RunLock\n"
            f"RunLock({str(tmp_path)!r}).acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match=f"pid {p.pid} "):
            RunLock(str(tmp_path)).acquire()
    finally:
        p.kill()
        p.wait()
    lock = RunLock(str(tmp_path)).acquire()
    assert lock.stale and f"pid {p.pid} " in lock.stale
    lock.release()


def test_ranks_die_with_a_killed_launcher(tmp_path):
    """A launcher (spawn) of two ranks that call die_with_launcher is SIGKILLed: the ranks go too."""
    rank = tmp_path / "rank.py"
    rank.write_text(textwrap.dedent(f"""
        import os, time
        from galvatron.training.launch import die_with_launcher
        die_with_launcher()
        open(os.path.join({str(tmp_path)!r}, "pid" + os.environ["RANK"]), "w").write(str(os.getpid()))
        time.sleep(120)
    """))
    launcher = subprocess.Popen([sys.executable, "-c", "import sys\nfrom galvatron.training.launch import spawn\n"
                                 f"sys.exit(spawn(2, [{str(rank)!r}], {str(tmp_path / 'logs')!r}))"])
    pids = []
    try:
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)
                    if (tmp_path / f"pid{r}").exists() and (tmp_path / f"pid{r}").read_text()]
        assert len(pids) == 2, "the ranks did not start"
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(p) for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if _running(p)]
    for p in alive:  # clean up before failing
        os.kill(p, signal.SIGKILL)
    assert not alive, f"orphan ranks {alive} outlived their launcher"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_metrics_lines_stay_valid_json_with_non_finite_values(tmp_path):
    from galvatron.training.metrics import MetricsWriter

    w = MetricsWriter(str(tmp_path))
    w.write({"step": 1, "loss": 2.5, "grad_norm": 1.0})
    w.write({"step": 2, "loss": math.nan, "grad_norm": math.inf})
    w.close()
    with open(tmp_path / "metrics.jsonl") as f:
        rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl")) for line in f]
    assert rows[1]["loss"] is None and rows[1]["grad_norm"] is None
    assert rows[1]["nonfinite"] == {"loss": "nan", "grad_norm": "inf"} and rows[0]["loss"] == 2.5


def test_the_non_finite_guard_stops_after_its_patience_naming_the_step():
    from galvatron.training.guards import NonFiniteGuard, non_finite

    assert non_finite(1.0, None) == [] and non_finite(math.nan, math.inf) == ["loss", "grad_norm"]
    g = NonFiniteGuard()  # default patience 0: the first non-finite step stops
    g.update(1, False)
    with pytest.raises(ValueError, match="step 2: non-finite loss"):
        g.update(2, True, "loss")
    g = NonFiniteGuard(patience=2)
    g.update(3, True)
    g.update(4, False)  # a finite step resets the count
    g.update(5, True)
    g.update(6, True)
    assert not g.healthy
    with pytest.raises(ValueError, match=r"step 7: .*non-finite since step 5.*nonfinite_patience = 2"):
        g.update(7, True)


def test_a_toml_or_yaml_parse_error_names_the_file(tmp_path):
    from galvatron.training.config import build_config

    for name, text in (("c.toml", "steps = = 3\n"), ("c.yaml", "steps: [3\n"), ("d.toml", "steps = 3\n\xff")):
        path = tmp_path / name
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(ValueError, match=f"{path}: (cannot parse|not a UTF-8)"):
            build_config(str(path))
    with pytest.raises(ValueError, match="optim.nonfinite_patience must be >= 0"):
        build_config(None, None, ["--optim.nonfinite_patience", "-1"])


def test_the_saved_config_records_the_plans_batch_size_and_a_refused_resume_writes_nothing(tmp_path):
    import yaml

    import galvatron
    from galvatron.plan import Plan
    from galvatron.training.config import build_config
    from galvatron.training.job import prepare_run

    hw = tmp_path / "hw.json"
    galvatron.hardware_preset("cpu-gloo", num_nodes=1, gpus_per_node=2).save(str(hw))
    plan = tmp_path / "plan.json"
    Plan.uniform(2, 4, global_batch_size=12).save(str(plan))
    run = tmp_path / "run"
    flags = ["--parallel.plan", str(plan), "--parallel.hardware", str(hw)]
    prepare_run(build_config(None, {"global_batch_size": 8, "run_dir": str(run)}, flags), 2)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["global_batch_size"] == 12  # what the run uses, not the overridden flag
    before = {n: (run / n).read_bytes() for n in ("config.yaml", "plan.json")}
    with pytest.raises(ValueError, match=r"--resume: no intact checkpoint .*\(no checkpoints at all\)"):
        prepare_run(build_config(None, {"global_batch_size": 8, "run_dir": str(run), "resume": True}, flags), 2)
    assert {n: (run / n).read_bytes() for n in before} == before


def test_a_torn_metrics_line_does_not_stop_a_resume(tmp_path):
    from galvatron.training.metrics import MetricsWriter

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n3\n{"step": 3, "lo')
    MetricsWriter(str(tmp_path), resume_step=2).close()  # a kill mid-write left the last line torn
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.9}\n'
