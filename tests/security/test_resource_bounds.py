"""Issue 12, item 7: resource bombs. A huge search space is refused up front with its numbers
and how to narrow it; the search's frontiers are bounded; a YAML alias bomb in a string field
is refused before any expansion. The bombs run in a child process with a 1 GiB data limit and a
timeout, so on the old code they fail the test instead of eating the machine."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

import galvatron
from galvatron.training.config import build_config

LIMIT = 1 << 30  # RLIMIT_DATA of the child: heap and anonymous mappings (torch itself needs ~250 MiB)


def run_bounded(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (LIMIT, LIMIT))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], preexec_fn=limit,  # noqa: PLW1509
                          capture_output=True, text=True, timeout=timeout)


def test_search_cli_batch_range_of_1e8_is_refused_at_once():
    r = run_bounded("""
        import sys
        from galvatron.cli import main
        sys.exit(main(["search", "--model", "gpt2-debug", "--gpus-per-node", "2",
                       "--global-batch-size", "1:100000000"]))
    """)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("galvatron: error: --global-batch-size: 1:100000000 gives 100000000 values")
    assert "Traceback" not in r.stderr


def test_search_api_with_a_range_of_1e8_batch_sizes_is_refused_without_building_it():
    r = run_bounded("""
        import galvatron
        hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=2)
        mp = galvatron.model_profile("gpt2-debug", hardware=hw)
        try:
            galvatron.search(mp, hw, global_batch_size=range(1, 10**8 + 1), num_threads=1)
        except ValueError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "refused: global_batch_size: 100000000 values; accepted: at most 4096" in r.stdout


def test_too_many_tasks_are_refused_with_the_count_and_how_to_narrow():
    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2-debug", hardware=hw)
    with pytest.raises(ValueError) as info:
        galvatron.search(mp, hw, global_batch_size=range(1, 4097), num_threads=1)
    msg = str(info.value)
    assert "max_tasks: the search space has" in msg and "more than the limit of 20000" in msg
    assert "fewer global batch sizes" in msg


def test_frontier_entries_are_bounded():
    from galvatron.search import MAX_FRONTIER_ENTRIES

    hw = galvatron.hardware_preset("a100-80g-sxm", num_nodes=1, gpus_per_node=8)
    mp = galvatron.model_profile("gpt2-debug", hardware=hw)
    res = galvatron.search(mp, hw, global_batch_size=64, num_threads=1, uniform_baseline=False)
    held = res.stats["frontier_entries"]  # depends on the cost model's pruning: derived, not fixed
    assert 10 < held < MAX_FRONTIER_ENTRIES
    with pytest.raises(ValueError, match="max_frontier_entries: the search stopped after holding"):
        galvatron.search(mp, hw, global_batch_size=64, num_threads=1, max_frontier_entries=held // 2)


def billion_laughs(levels: int = 9) -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijk"[: levels - 1]:
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text + f"data:\n  kind: tokens\n  path: *{prev}\n"


def test_yaml_alias_bomb_in_a_string_field_is_refused(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    r = run_bounded(f"""
        from galvatron.training.config import build_config
        try:
            build_config({str(path)!r})
        except ValueError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"refused: {path}: cannot parse YAML at line 2" in r.stdout and "aliases" in r.stdout


@pytest.mark.parametrize("text, message", [
    ("data:\n  path: [1, 2]\n", "data.path: expected str (a string), got [1, 2]"),
    ("data:\n  path: {a: 1}\n", "data.path: expected str (a string)"),
    ("model:\n  name: [gpt2-debug]\n", "model.name: expected str"),
    ("steps: 7.9\n", "steps: expected int"),
    ("steps: true\n", "steps: expected int"),
    ("global_batch_size: 1.0e+300\n", "global_batch_size: expected int"),
    ("optim:\n  lr: .nan\n", "optim.lr must be a finite number"),
    ("optim:\n  lr: .inf\n", "optim.lr must be a finite number"),
    ("a: &x 1\nsteps: *x\n", "aliases (*name) are not accepted"),
    ("steps: !!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    ("[" * 200 + "]" * 200 + "\n", "nested deeper than 32 levels"),
])
def test_config_values_are_type_checked_before_use(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        build_config(str(path))
    assert message in str(info.value) and str(path) in str(info.value), str(info.value)


def test_config_overrides_refuse_non_finite_and_huge_values():
    for args, message in ((["--optim.lr", "nan"], "optim.lr must be a finite number"),
                          (["--optim.lr", "inf"], "optim.lr must be a finite number"),
                          (["--model.seq_len", "inf"], "model.seq_len: expected int"),
                          (["--model.seq_len", "1e30"], "model.seq_len: expected int")):
        with pytest.raises(ValueError, match=message.replace(".", "\\.")):
            build_config(None, None, args)


def test_a_search_whose_helper_threads_cannot_start_runs_on_the_calling_thread():
    # Under a data limit with less room than a thread stack (8 MiB), std::thread fails with
    # EAGAIN: the search must still finish (fewer threads), not fail with "Resource temporarily
    # unavailable" (which --serve's worker turned into an internal error).
    code = """
        import resource
        import galvatron
        from galvatron.profiles.presets import hardware_preset
        hw = hardware_preset("a100-80g-sxm", 1, 2)
        mp = galvatron.model_profile("gpt2-debug", seq_len=64, hardware=hw)
        used = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
                    if line.startswith("VmData:"))
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        resource.setrlimit(resource.RLIMIT_DATA, (used + 4 * 2**20, hard))
        r = galvatron.search(mp, hw, global_batch_size=4, num_threads=2)
        print("world", r.plan.world_size)
    """
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "world 2" in r.stdout, r.stderr[-2000:]
