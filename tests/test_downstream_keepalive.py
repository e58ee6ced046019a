"""gateway_lib.downstream's kept-alive sessions, against real child processes.

Kept apart from test_downstream.py (per-call sessions) so each file reads as one story;
both test gateway_lib/downstream/. The fault server's `counter` tool counts calls per
process, so its answers show which process (and so which session) served a call.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from dataclasses import replace

import pytest

import harness
from gateway_lib.downstream import Downstream
from gateway_lib.errors import DownstreamError, RequestCancelled, ServerUnavailable, ToolTimeout
from gateway_lib.model import KEEP_ALIVE, PER_CALL, ServerSpec

CALL_S = 60  # generous: first calls start a process on a busy machine


@pytest.fixture
def downstream():
    ds = Downstream()
    yield ds
    ds.shutdown()
    assert ds.status()["kept_sessions"] == []


def fault(tag: str, *args: str, name: str = "fs", log=None, session: str = KEEP_ALIVE, **fields) -> ServerSpec:
    argv = [str(harness.FAULT_SERVER), "--tag", tag, *(["--log", str(log)] if log else []), *args]
    return ServerSpec(name=name, transport="stdio", command=sys.executable, args=tuple(argv), session=session, **fields)


def count(ds: Downstream, spec: ServerSpec, agent: str | None) -> str:
    """One call of the fault server's per-process counter; its answer as text."""
    return text(ds.call_tool(spec, "counter", {}, CALL_S, agent=agent))


def text(result: dict) -> str:
    return result["content"][0]["text"]


def open_sessions(ds: Downstream) -> list[tuple[str, str | None, int]]:
    return [(s["server"], s["agent"], s["calls"]) for s in ds.status()["kept_sessions"]]


class Caller:
    """One downstream call on its own thread; `outcome()` is its result or exception."""

    def __init__(self, call):
        self._outcomes: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(call,), name="test-caller")
        self._thread.start()

    def _run(self, call) -> None:
        try:
            self._outcomes.put(call())
        except BaseException as exc:
            self._outcomes.put(exc)

    def done(self) -> bool:
        return not self._outcomes.empty()

    def outcome(self, timeout: float = 15):
        value = self._outcomes.get(timeout=timeout)
        self._thread.join(timeout)
        return value


# --- state is kept, per agent ------------------------------------------------------------


def test_state_survives_between_calls_of_one_agent_on_one_process(downstream, tag):
    spec = fault(tag)

    assert [count(downstream, spec, "alice") for _ in range(3)] == ["1", "2", "3"]
    assert len(harness.tagged_pids(tag)) == 1
    [session] = downstream.status()["kept_sessions"]
    assert (session["server"], session["agent"], session["calls"], session["in_flight"]) == ("fs", "alice", 3, 0)
    assert session["age_s"] >= session["idle_s"] >= 0


def test_each_agent_gets_its_own_process_and_never_sees_another_agents_state(downstream, tag):
    spec = fault(tag)

    seen = [(agent, count(downstream, spec, agent)) for agent in ("alice", "alice", "bob", "alice", "bob")]

    assert seen == [("alice", "1"), ("alice", "2"), ("bob", "1"), ("alice", "3"), ("bob", "2")]
    assert len(harness.tagged_pids(tag)) == 2
    assert open_sessions(downstream) == [("fs", "alice", 3), ("fs", "bob", 2)]


def test_per_call_servers_ignore_the_agent_and_keep_nothing_open(downstream, tag):
    spec = fault(tag, session=PER_CALL)

    assert [count(downstream, spec, "alice") for _ in range(2)] == ["1", "1"]
    assert downstream.status()["kept_sessions"] == []
    assert harness.wait_no_tagged(tag) == []


# --- lifecycle -------------------------------------------------------------------------------


def test_an_idle_session_is_closed_and_its_process_ends(downstream, tag):
    spec = fault(tag, idle_timeout_ms=1000)
    assert count(downstream, spec, "alice") == "1"

    assert harness.wait_no_tagged(tag, timeout=20) == []
    assert downstream.status()["kept_sessions"] == []
    assert count(downstream, spec, "alice") == "1"  # a fresh process


def test_a_call_longer_than_the_idle_timeout_does_not_make_the_session_idle(downstream, tag):
    spec = fault(tag, idle_timeout_ms=1000)
    assert count(downstream, spec, "alice") == "1"

    assert text(downstream.call_tool(spec, "sleep", {"seconds": 2.5}, CALL_S, agent="alice")) == "slept 2.5"

    assert count(downstream, spec, "alice") == "2"


def test_retire_closes_the_sessions_whose_entry_changed_or_disappeared(downstream, tag):
    first, second = fault(tag, name="first"), fault(tag, name="second")
    assert count(downstream, first, "alice") == count(downstream, second, "alice") == "1"
    changed = replace(first, timeout_ms=5000)

    downstream.retire({"first": changed, "second": second})

    assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 1, timeout=20)
    assert open_sessions(downstream) == [("second", "alice", 1)]
    assert count(downstream, second, "alice") == "2"  # the unchanged server kept its state
    assert count(downstream, changed, "alice") == "1"  # the changed one starts afresh

    downstream.retire({})

    assert harness.wait_no_tagged(tag, timeout=20) == []
    assert downstream.status()["kept_sessions"] == []


def test_a_call_with_a_changed_entry_replaces_the_session_opened_with_the_old_one(downstream, tag):
    old = fault(tag)
    assert count(downstream, old, "alice") == "1"

    assert count(downstream, replace(old, description="new"), "alice") == "1"

    assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 1, timeout=20)
    assert open_sessions(downstream) == [("fs", "alice", 1)]



def test_retire_lets_a_running_call_finish_and_closes_the_old_process_after_it(downstream, tag, tmp_path):
    spec, release = fault(tag, "--fault-tools"), tmp_path / "release"
    assert count(downstream, spec, "alice") == "1"
    [old_pid] = harness.tagged_pids(tag)
    waiter = Caller(lambda: downstream.call_tool(spec, "wait_file", {"path": str(release)}, CALL_S, agent="alice"))
    assert harness.wait_until(lambda: open_sessions(downstream) == [("fs", "alice", 2)], timeout=20)
    changed = replace(spec, description="changed")

    downstream.retire({"fs": changed})

    assert count(downstream, changed, "alice") == "1"  # a fresh session for the new entry, at once
    assert old_pid in harness.tagged_pids(tag) and not waiter.done()  # the old call still runs
    release.touch()
    assert text(waiter.outcome(timeout=CALL_S)) == "released"
    assert harness.wait_until(lambda: old_pid not in harness.tagged_pids(tag), timeout=20)
    assert count(downstream, changed, "alice") == "2"


def test_a_call_made_under_an_older_config_never_displaces_the_newer_session(downstream, tag):
    old = fault(tag)
    new = replace(old, description="new")
    downstream.retire({"fs": new})  # what a reload says: `new` is the config in force
    assert [count(downstream, new, "alice") for _ in range(2)] == ["1", "2"]

    assert count(downstream, old, "alice") == "1"  # served under its own config, on a process of its own

    assert count(downstream, new, "alice") == "3"  # the newer session kept its state
    assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 1, timeout=20)
    assert open_sessions(downstream) == [("fs", "alice", 3)]


def test_a_json_rpc_error_with_code_32000_is_a_downstream_error_and_the_session_stays(downstream, tag):
    spec = fault(tag)
    assert count(downstream, spec, "alice") == "1"

    with pytest.raises(DownstreamError) as caught:
        downstream.call_tool(spec, "rpc_error", {"code": -32000, "message": "busy"}, CALL_S, agent="alice")

    assert caught.value.context == {"downstream_code": -32000}
    assert count(downstream, spec, "alice") == "2"  # same process, same state


@pytest.mark.parametrize("kind", ["deep", "surrogate"])
def test_an_answer_that_cannot_be_read_fails_its_call_at_once_and_the_session_stays(downstream, tag, kind):
    spec = fault(tag, "--fault-tools")
    assert count(downstream, spec, "alice") == "1"

    with pytest.raises(DownstreamError, match="cannot be read"):
        downstream.call_tool(spec, "unreadable", {"kind": kind}, CALL_S, agent="alice")

    assert count(downstream, spec, "alice") == "2"

def test_a_crash_mid_call_is_unavailable_is_not_retried_and_the_next_call_starts_afresh(downstream, tag, tmp_path):
    log = tmp_path / "server.log"
    spec = fault(tag, log=log)
    assert count(downstream, spec, "alice") == "1"

    with pytest.raises(ServerUnavailable) as caught:
        downstream.call_tool(spec, "crash", {}, CALL_S, agent="alice")

    assert caught.value.message.startswith("Server 'fs' closed the connection during tools/call")
    assert harness.count_events(log, "call", tool="crash") == 1
    assert count(downstream, spec, "alice") == "1"
    assert harness.count_events(log, "start") == 2


def test_a_process_that_dies_while_idle_is_dropped_and_replaced_on_the_next_call(downstream, tag):
    spec = fault(tag)
    assert count(downstream, spec, "alice") == "1"
    [pid] = harness.tagged_pids(tag)

    os.kill(pid, signal.SIGKILL)

    assert harness.wait_until(lambda: downstream.status()["kept_sessions"] == [], timeout=20)
    assert count(downstream, spec, "alice") == "1"
    assert harness.tagged_pids(tag) != [pid]


def test_a_server_that_never_initializes_is_unavailable_at_the_deadline_and_leaves_nothing(downstream, tag):
    # How soon after the deadline the error comes is the benchmark's row 6, not a test's.
    with pytest.raises(ServerUnavailable, match=r"^Server 'fs' did not finish starting within 500 ms$"):
        downstream.call_tool(fault(tag, "--mode", "never-initialize"), "echo", {"text": "x"}, 0.5, agent="alice")

    assert harness.wait_no_tagged(tag, timeout=20) == []
    assert harness.wait_until(lambda: downstream.status()["kept_sessions"] == [], timeout=10)


# --- deadlines, cancellation, concurrency ------------------------------------------------------


def test_a_timed_out_call_tells_the_server_and_keeps_the_session(downstream, tag, tmp_path):
    log = tmp_path / "server.log"
    spec = fault(tag, log=log)
    assert count(downstream, spec, "alice") == "1"

    with pytest.raises(ToolTimeout, match=r"^Server 'fs' did not answer within 500 ms$"):
        downstream.call_tool(spec, "sleep", {"seconds": 2}, 0.5, agent="alice")

    # The fault server is single-threaded: it reads the notification once its sleep ends.
    cancelled = lambda: harness.count_events(log, "notification", method="notifications/cancelled")  # noqa: E731
    assert harness.wait_until(lambda: cancelled() == 1, timeout=20)
    assert count(downstream, spec, "alice") == "2"
    assert harness.count_events(log, "start") == 1


def test_calls_on_one_session_run_concurrently_and_a_cancelled_one_leaves_the_session_open(downstream, tag):
    spec = ServerSpec(name="sdk", transport="stdio", command=sys.executable,
                      args=(str(harness.SDK_STDIO_SERVER), "--tag", tag), session=KEEP_ALIVE)
    assert text(downstream.call_tool(spec, "echo", {"text": "open"}, CALL_S, agent="alice")) == "open"
    cancel = threading.Event()
    sleeper = Caller(lambda: downstream.call_tool(spec, "sleep", {"seconds": 600}, CALL_S * 2, cancel, agent="alice"))
    assert harness.wait_until(lambda: open_sessions(downstream) == [("sdk", "alice", 2)], timeout=20)

    meanwhile = downstream.call_tool(spec, "echo", {"text": "meanwhile"}, CALL_S, agent="alice")

    assert text(meanwhile) == "meanwhile"
    assert not sleeper.done()  # answered while the sleep was still in flight on the same session
    cancel.set()
    assert isinstance(sleeper.outcome(), RequestCancelled)
    assert text(downstream.call_tool(spec, "echo", {"text": "after"}, CALL_S, agent="alice")) == "after"
    assert open_sessions(downstream) == [("sdk", "alice", 4)]
    assert len(harness.tagged_pids(tag)) == 1


# --- shutdown ------------------------------------------------------------------------------------


def test_shutdown_closes_kept_sessions_kills_their_grandchildren_and_fails_calls_in_flight(tag):
    ds = Downstream()
    spec = fault(tag, "--mode", "grandchild")
    assert count(ds, spec, "alice") == "1"
    assert harness.wait_until(lambda: len(harness.tagged_pids(tag)) == 2, timeout=20)  # server and grandchild
    sleeper = Caller(lambda: ds.call_tool(spec, "sleep", {"seconds": 600}, CALL_S * 2, agent="alice"))
    assert harness.wait_until(lambda: open_sessions(ds) == [("fs", "alice", 2)], timeout=20)

    ds.shutdown(timeout_s=10)

    failure = sleeper.outcome()
    assert isinstance(failure, ServerUnavailable) and "shutting down" in failure.message
    assert harness.wait_no_tagged(tag, timeout=20) == []
    assert ds.status()["kept_sessions"] == []
    with pytest.raises(ServerUnavailable, match="shutting down"):
        count(ds, spec, "alice")


def test_shutdown_closes_stdin_first_then_sends_sigterm_to_a_server_that_lingers(tag, tmp_path):
    log = tmp_path / "server.log"
    ds = Downstream()
    spec = fault(tag, "--mode", "linger", log=log)
    assert count(ds, spec, "alice") == "1"

    ds.shutdown(timeout_s=3)

    assert harness.wait_no_tagged(tag, timeout=20) == []
    events = [entry["event"] for entry in harness.read_log(log) if entry["event"] in ("stdin-closed", "sigterm")]
    assert events == ["stdin-closed", "sigterm"]  # EOF first, then SIGTERM; never a bare SIGKILL


def test_shutdown_kills_a_server_that_ignores_stdin_and_sigterm_within_the_bound(tag):
    ds = Downstream()
    spec = fault(tag, "--mode", "ignore-sigterm")
    assert count(ds, spec, "alice") == "1"

    ds.shutdown(timeout_s=3)

    assert harness.tagged_pids(tag) == []  # gone when shutdown returns: SIGKILL came within the bound
