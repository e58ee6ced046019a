"""Run the test suite as several pytest sessions at once, one test file per session.

Why: most of a test's wall time is spent waiting on the gateway's own bounds (grace periods,
exit bounds, deadlines) or on a gateway process it started, so a single pytest process leaves
the cores idle much of the time. The design fixes the packages (no pytest-xdist), so this is
standard library only.

How: JOBS worker processes each import pytest and the test harness (which pulls in the MCP
SDK: over a second of CPU) once, then fork a child per test file that runs `pytest.main` on it
and nothing else, so every file still gets a fresh process and a session of its own, without
paying for the imports again. Files go out heaviest first (by how long they took last time,
kept under .pytest_cache/, else by size). One line is printed per file, the whole output of a
file that failed, and a total; the exit status is 0 only if every file passed.

    python tests/run_suite.py                  # every tests/test_*.py, JOBS = cores + 1
    python tests/run_suite.py -j 1 tests/test_rpc.py -- -k framing

Arguments after `--` go to every pytest session.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
TIMINGS = ROOT / ".pytest_cache" / "run_suite_timings.json"
# One more session than cores: about a third of a file's time is spent waiting, not computing.
DEFAULT_JOBS = (os.cpu_count() or 1) + 1
# pytest's exit status when nothing was collected: a fault for a named file, unless arguments
# given after `--` (a -k or -m) may have deselected every test in it.
NO_TESTS_COLLECTED = 5
ANYIO_ALREADY_IMPORTED = "ignore:Module already imported so cannot be rewritten; anyio:pytest.PytestAssertRewriteWarning"
WORKER_FLAG = "--serve-files"  # how the runner starts its workers; not for people


@dataclass
class FileResult:
    path: str
    returncode: int
    seconds: float
    counts: dict[str, int]
    output: str
    may_deselect: bool

    @property
    def passed(self) -> bool:
        return self.returncode == 0 or (self.returncode == NO_TESTS_COLLECTED and self.may_deselect)


def main(argv: list[str]) -> int:
    if argv[:1] == [WORKER_FLAG]:
        return _serve_files()
    args, pytest_args = _parse(argv)
    files = _order(args.files or sorted(str(path.relative_to(ROOT)) for path in TESTS.glob("test_*.py")))
    started = time.monotonic()
    results = _run_all(files, min(args.jobs, len(files)), pytest_args)
    elapsed = time.monotonic() - started
    _save_timings(results)
    return _report(results, len(files), elapsed, args.jobs)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    own, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"pytest sessions at once (default {DEFAULT_JOBS}: cores + 1)")
    parser.add_argument("files", nargs="*", help="test files (default: every tests/test_*.py)")
    args = parser.parse_args(own)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args, pytest_args


def _order(files: list[str]) -> list[str]:
    """Heaviest first, so the last files to start are short and no session runs on alone."""
    try:
        last = json.loads(TIMINGS.read_text())
    except (OSError, ValueError):
        last = {}

    def weight(path: str) -> float:
        if isinstance(last.get(path), (int, float)):
            return float(last[path])
        return (ROOT / path).stat().st_size / 1000  # a stand-in: roughly a second per kilobyte
    return sorted(files, key=weight, reverse=True)


# --- the runner's side ----------------------------------------------------------------------

def _run_all(files: list[str], jobs: int, pytest_args: list[str]) -> list[FileResult]:
    pending: queue.Queue[str] = queue.Queue()
    for path in files:
        pending.put(path)
    results: list[FileResult] = []
    lock = threading.Lock()
    workers = [_Worker() for _ in range(jobs)]

    def drive(worker: _Worker) -> None:
        while True:
            try:
                path = pending.get_nowait()
            except queue.Empty:
                return
            result = worker.run(path, pytest_args)
            with lock:
                results.append(result)
                _print_line(result, len(results), len(files))

    threads = [threading.Thread(target=drive, args=(worker,), name=f"suite-{n}") for n, worker in enumerate(workers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        while not pending.empty():
            pending.get_nowait()
        for worker in workers:
            worker.kill()
        raise
    finally:
        for worker in workers:
            worker.close()
    return results


class _Worker:
    """One worker process, which runs the files it is handed one at a time."""

    def __init__(self):
        self._process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), WORKER_FLAG], cwd=ROOT,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._child = 0  # the pid of the session running now, so an interrupt can end it

    def run(self, path: str, pytest_args: list[str]) -> FileResult:
        with tempfile.TemporaryDirectory(prefix="run-suite-") as scratch:
            report, log = Path(scratch) / "report.xml", Path(scratch) / "output.txt"
            started = time.monotonic()
            # No cache plugin: sessions running side by side would write the same cache files.
            # anyio's pytest plugin is already imported (the SDK needs anyio), so pytest cannot
            # rewrite its asserts and would warn, which the suite's filterwarnings makes an error.
            # A temporary folder of its own: sessions sharing pytest's default one prune each
            # other's numbered folders while they scan them.
            argv = ["-q", "-p", "no:cacheprovider", "-W", ANYIO_ALREADY_IMPORTED, f"--junitxml={report}",
                    f"--basetemp={Path(scratch) / 'tmp'}", path, *pytest_args]
            job = {"argv": argv, "log": str(log)}
            try:
                self._process.stdin.write(json.dumps(job) + "\n")
            except OSError:  # the worker is gone; every file handed to it from now on fails
                pass
            self._child = json.loads(self._process.stdout.readline() or '{"pid": 0}')["pid"]
            reply = self._process.stdout.readline()
            self._child = 0
            seconds = time.monotonic() - started
            returncode = json.loads(reply)["returncode"] if reply else -1
            output = log.read_text("utf-8", "replace") if log.exists() else ""
            if not reply:
                output += f"\nrun_suite: the worker process died running {path}\n"
            return FileResult(path, returncode, seconds, _counts(report), output, bool(pytest_args))

    def kill(self) -> None:
        if self._child:
            _kill_group(self._child)  # the session leads a group of its own (os.setsid)
        self._process.kill()

    def close(self) -> None:
        try:
            self._process.stdin.close()
        except OSError:
            pass
        self._process.wait()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _counts(report: Path) -> dict[str, int]:
    """passed/failures/errors/skipped from pytest's JUnit XML; empty if pytest never wrote it."""
    try:
        root = ElementTree.parse(report).getroot()
    except (OSError, ElementTree.ParseError):
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    numbers = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    numbers["passed"] = numbers.pop("tests") - numbers["failures"] - numbers["errors"] - numbers["skipped"]
    return numbers


def _print_line(result: FileResult, done: int, total: int) -> None:
    verdict = "ok" if result.passed else f"FAILED (exit {result.returncode})"
    print(f"[{done:>{len(str(total))}}/{total}] {result.path}: {_summary(result.counts)}"
          f" in {result.seconds:.1f}s {verdict}", flush=True)
    if not result.passed:
        print(result.output, flush=True)
        return
    # A passing file's output is left out, but not why a test was skipped (pytest's -ra lines).
    for line in result.output.splitlines():
        if line.startswith(("SKIPPED", "XFAIL", "XPASS")):
            print(f"    {line}", flush=True)


def _summary(counts: dict[str, int]) -> str:
    if not counts:
        return "no report"
    parts = [f"{counts[key]} {key}" for key in ("passed", "failures", "errors", "skipped") if counts.get(key)]
    return ", ".join(parts) or "0 tests"


def _report(results: list[FileResult], expected: int, elapsed: float, jobs: int) -> int:
    totals = {key: sum(result.counts.get(key, 0) for result in results)
              for key in ("passed", "failures", "errors", "skipped")}
    failed = [result.path for result in results if not result.passed]
    slowest = sorted(results, key=lambda result: result.seconds, reverse=True)[:5]
    print(f"\n{_summary(totals)} in {elapsed:.1f}s ({len(results)} files, {jobs} at a time)")
    print("slowest: " + ", ".join(f"{Path(result.path).name} {result.seconds:.1f}s" for result in slowest))
    if failed:
        print("FAILED: " + " ".join(failed))
    if len(results) != expected:  # a file that never reported is no pass
        print(f"FAILED: only {len(results)} of {expected} files reported")
    return 1 if failed or len(results) != expected else 0


def _save_timings(results: list[FileResult]) -> None:
    try:
        known = json.loads(TIMINGS.read_text())
    except (OSError, ValueError):
        known = {}
    # A failed file's time counts too: it weighs about the same next time, when it may pass.
    known.update({result.path: round(result.seconds, 2) for result in results if _is_suite_file(result.path)})
    try:
        TIMINGS.parent.mkdir(exist_ok=True)
        TIMINGS.write_text(json.dumps(known, indent=1, sort_keys=True))
    except OSError:
        pass  # the timings only order the next run; a read-only checkout runs in size order


def _is_suite_file(path: str) -> bool:
    return (ROOT / path).resolve().parent == TESTS


# --- the worker's side ----------------------------------------------------------------------

def _serve_files() -> int:
    """Import what every file needs once, then run each file handed over on stdin in a fork."""
    sys.path.insert(0, str(TESTS))
    import pytest
    import harness  # noqa: F401  (the MCP SDK and the gateway's modules, inherited by each fork)

    # Forking is only safe while this process has one thread; the imports above start none.
    assert threading.active_count() == 1, threading.enumerate()
    for line in sys.stdin:
        job = json.loads(line)
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_in_child(pytest, job)  # points its stdout at the file's log: replies stay here
        _reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        _reply({"returncode": os.waitstatus_to_exitcode(status)})
    return 0


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()  # before the next fork too, so no child inherits a half-written reply


def _run_in_child(pytest, job: dict) -> None:
    code = 1
    try:
        os.setsid()  # a process group of its own, so the runner can end it and all it started
        with open(os.devnull, "rb") as null:
            os.dup2(null.fileno(), 0)
        with open(job["log"], "wb") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        code = pytest.main(job["argv"])
    except BaseException:
        import traceback

        traceback.print_exc()  # into the file's log, which the runner prints
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(code))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
