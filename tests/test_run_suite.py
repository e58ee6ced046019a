"""tests/run_suite.py, the suite's runner: it passes only when every file passes, counts what
each file's pytest session reported, shows the whole output of a file that failed, and runs
each file in a process of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parent / "run_suite.py"
RUN_BOUND_S = 120  # two workers import pytest and the SDK; generous for a loaded machine


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=RUN_BOUND_S,
                          stdin=subprocess.DEVNULL)


def write_tests(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text(body)
    return str(path)


PID_TEST = """
import os

def test_pid():
    print("PID", os.getpid())
    assert False, "shown"
"""


def test_a_suite_passes_only_if_every_file_passes_and_a_failing_files_output_is_shown(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -ra\n")  # as the suite's pyproject.toml has
    good = write_tests(tmp_path, "test_good.py", "import pytest\n\ndef test_a(): pass\n\ndef test_b(): pass\n\n"
                       "@pytest.mark.skip(reason='shown as skipped')\ndef test_c(): pass\n")
    bad = write_tests(tmp_path, "test_bad.py", "def test_fails():\n    assert 1 + 1 == 3, 'arithmetic'\n")
    done = run("-j", "2", good, bad)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"test_good\.py: 2 passed, 1 skipped in [\d.]+s ok", done.stdout), done.stdout
    assert re.search(r"test_bad\.py: 1 failures in [\d.]+s FAILED \(exit 1\)", done.stdout), done.stdout
    assert "AssertionError: arithmetic" in done.stdout  # the failing file's own output
    assert "shown as skipped" in done.stdout  # a passing file's output is left out, but not its skips
    assert "2 passed, 1 failures, 1 skipped" in done.stdout
    assert f"FAILED: {bad}" in done.stdout

    passing = run("-j", "2", good)
    assert passing.returncode == 0, passing.stdout + passing.stderr


def test_each_file_runs_in_a_process_of_its_own(tmp_path):
    files = [write_tests(tmp_path, f"test_pid{n}.py", PID_TEST) for n in range(3)]
    done = run("-j", "1", *files)
    pids = set(re.findall(r"PID (\d+)", done.stdout))
    assert len(pids) == 3, done.stdout  # one worker, yet a fresh process per file (each fails, to print its pid)


def test_arguments_after_the_separator_reach_pytest_and_a_file_they_empty_is_no_failure(tmp_path):
    chosen = write_tests(tmp_path, "test_chosen.py", "def test_wanted(): pass\n\ndef test_other(): pass\n")
    emptied = write_tests(tmp_path, "test_emptied.py", "def test_other(): pass\n")
    done = run("-j", "2", chosen, emptied, "--", "-k", "wanted")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"test_chosen\.py: 1 passed in", done.stdout), done.stdout

    nothing = write_tests(tmp_path, "test_nothing.py", "VALUE = 1\n")
    assert run("-j", "1", nothing).returncode == 1  # without -k or -m, a file with no test is a fault


def test_a_worker_that_dies_fails_its_file_and_every_file_handed_to_it_after(tmp_path):
    killer = write_tests(tmp_path, "test_killer.py",
                         "import os, signal\n\ndef test_kills_the_worker():\n    os.kill(os.getppid(), signal.SIGKILL)\n")
    after = write_tests(tmp_path, "test_after.py", "def test_fine(): pass\n")
    done = run("-j", "1", killer, after)  # the larger file goes first: killer, then after
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the worker process died" in done.stdout
    assert re.search(r"test_after\.py: no report in [\d.]+s FAILED", done.stdout), done.stdout
