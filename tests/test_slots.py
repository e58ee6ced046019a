"""Per-server concurrency: calls past max_concurrency wait their turn; other calls run at once.

Proven by counting: slots held and waiting, and the downstream sessions the fault server
logs ("start" per process, a "call" per tools/call as it begins). A `sleep` of 60 s that is
cancelled by the test is how a call is held in flight without timing anything.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

import harness
from gateway_lib.errors import TIMEOUT, RequestCancelled, ToolTimeout
from gateway_lib.model import ServerSpec
from gateway_lib import slots as slots_module
from gateway_lib.cancellation import CancelEvent
from gateway_lib.slots import ServerSlots

LIMITED = ServerSpec(name="s", transport="stdio", command="srv", max_concurrency=1)


def far() -> float:
    return time.monotonic() + 30


def test_a_call_past_the_limit_waits_until_a_slot_frees():
    slots = ServerSlots()
    entered = threading.Event()

    def second() -> None:
        release = slots.acquire(LIMITED, far(), threading.Event())
        entered.set()
        release()

    release_first = slots.acquire(LIMITED, far(), threading.Event())
    waiter = threading.Thread(target=second)
    waiter.start()
    assert harness.wait_until(lambda: slots.waiting == 1, 5)
    assert not entered.is_set()
    release_first()
    assert entered.wait(5)
    waiter.join(5)
    assert slots.waiting == 0


def test_a_slot_released_twice_is_given_back_once():
    slots = ServerSlots()
    release = slots.acquire(LIMITED, far(), threading.Event())
    release()
    release()  # a second release must not open a second slot
    slots.acquire(LIMITED, far(), threading.Event())
    with pytest.raises(ToolTimeout):
        slots.acquire(LIMITED, time.monotonic(), threading.Event())


def test_a_server_without_a_limit_never_queues():
    slots = ServerSlots()
    free = ServerSpec(name="s", transport="stdio", command="srv")
    slots.acquire(free, far(), threading.Event())
    slots.acquire(free, far(), threading.Event())
    assert slots.waiting == 0


def test_a_queued_call_gives_up_at_its_deadline_or_when_cancelled():
    slots = ServerSlots()
    cancelled = threading.Event()
    cancelled.set()
    release = slots.acquire(LIMITED, far(), threading.Event())
    with pytest.raises(ToolTimeout):
        slots.acquire(LIMITED, time.monotonic(), threading.Event())
    with pytest.raises(RequestCancelled):
        slots.acquire(LIMITED, far(), cancelled)
    release()
    assert slots.waiting == 0



def test_a_queued_call_is_woken_by_its_cancellation_and_by_a_release_without_polling(monkeypatch):
    # With the poll interval made an hour, only a real wake-up can end these waits in time.
    monkeypatch.setattr(slots_module, "_CANCEL_CHECK_S", 3600.0)
    slots = ServerSlots()
    release = slots.acquire(LIMITED, far(), CancelEvent())
    cancel = CancelEvent()
    outcomes: queue.Queue = queue.Queue()

    def queue_up(flag: CancelEvent) -> None:
        try:
            outcomes.put(slots.acquire(LIMITED, far(), flag))
        except RequestCancelled as exc:
            outcomes.put(exc)

    threading.Thread(target=queue_up, args=(cancel,)).start()
    assert harness.wait_until(lambda: slots.waiting == 1, 5)
    cancel.set()
    assert isinstance(outcomes.get(timeout=10), RequestCancelled)

    threading.Thread(target=queue_up, args=(CancelEvent(),)).start()
    assert harness.wait_until(lambda: slots.waiting == 1, 5)
    release()
    outcomes.get(timeout=10)()  # it got the slot; give it back

# --- end to end -------------------------------------------------------------------------------

RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}


def execute(raw: harness.RawGateway, request_id: str, server: str, tool: str, args: dict, **extra) -> None:
    raw.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
              "params": {"name": "execute_tool", "arguments": {"server": server, "tool": tool, "args": args, **extra}}})


def status(raw: harness.RawGateway) -> dict:
    return raw.request("tools/call", {"name": "get_gateway_status", "arguments": {}})["result"]["structuredContent"]


def sleeping(log) -> int:
    return harness.count_events(log, "call", method="tools/call", tool="sleep")


def test_calls_past_a_servers_limit_queue_without_starting_a_process_and_run_when_a_slot_frees(config_dir, tag):
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log, max_concurrency=1)}, RULES)
    raw = config_dir.raw_gateway("--debug")
    try:
        raw.initialize()
        execute(raw, "slow", "tools", "sleep", {"seconds": 60})
        assert harness.wait_until(lambda: sleeping(log) == 1, 20)
        execute(raw, "queued", "tools", "echo", {"text": "my turn"})
        assert harness.wait_until(lambda: status(raw)["downstream"]["queued_calls"] == 1, 10)
        assert harness.count_events(log, "start") == 1  # the queued call started no process
        raw.notify("notifications/cancelled", {"requestId": "slow"})
        answer = raw.response_for("queued", timeout=20)
        assert answer["result"]["content"] == [{"type": "text", "text": "my turn"}]
        assert harness.count_events(log, "start") == 2
        assert status(raw)["downstream"]["queued_calls"] == 0
    finally:
        raw.close()


def test_a_queued_call_that_outlives_its_deadline_is_a_timeout_and_starts_nothing(config_dir, tag):
    log = config_dir.path("server.log")
    config_dir.write({"tools": harness.fault_server(tag, log=log, max_concurrency=1)}, RULES)
    raw = config_dir.raw_gateway()
    try:
        raw.initialize()
        execute(raw, "slow", "tools", "sleep", {"seconds": 60})
        assert harness.wait_until(lambda: sleeping(log) == 1, 20)
        execute(raw, "late", "tools", "echo", {"text": "x"}, timeout_ms=200)
        answer = raw.response_for("late", timeout=20)["result"]
        assert answer["isError"] is True
        assert answer["structuredContent"]["error"]["code"] == TIMEOUT
        assert harness.count_events(log, "start") == 1
        raw.notify("notifications/cancelled", {"requestId": "slow"})
    finally:
        raw.close()


def test_calls_to_one_server_and_to_different_servers_are_in_flight_together(config_dir, tag):
    logs = {name: config_dir.path(f"{name}.log") for name in ("a", "b")}
    config_dir.write({name: harness.fault_server(tag, log=log) for name, log in logs.items()}, RULES)
    raw = config_dir.raw_gateway()
    try:
        raw.initialize()
        ids = ["a1", "a2", "a3", "b1"]
        for request_id in ids:
            execute(raw, request_id, request_id[0], "sleep", {"seconds": 60})
        # Each sleep lasts 60 s, so seeing all four begin proves they overlap.
        assert harness.wait_until(lambda: (sleeping(logs["a"]), sleeping(logs["b"])) == (3, 1), 30)
        for request_id in ids:
            raw.notify("notifications/cancelled", {"requestId": request_id})
        assert raw.request("ping", {})["result"] == {}
    finally:
        raw.close()
    assert harness.wait_no_tagged(tag) == []


def test_a_slot_is_held_until_the_session_has_closed_not_only_until_the_answer(config_dir, tag):
    # linger: after answering, the server outlives its stdin until the SIGTERM that comes
    # seconds later, so the session takes that long to close; a second call must wait for
    # that, not start a second process.
    log = config_dir.path("server.log")
    entry = harness.fault_server(tag, "--mode", "linger", log=log, max_concurrency=1)
    config_dir.write({"tools": entry}, RULES)
    raw = config_dir.raw_gateway("--debug")
    try:
        raw.initialize()
        execute(raw, "first", "tools", "echo", {"text": "1"})
        assert raw.response_for("first", timeout=20)["result"]["isError"] is False
        execute(raw, "second", "tools", "echo", {"text": "2"})
        assert harness.wait_until(lambda: status(raw)["downstream"]["queued_calls"] == 1, 10)
        assert raw.response_for("second", timeout=30)["result"]["isError"] is False
    finally:
        raw.close()
    # In the log's order (one appended line each): the second process started only after the
    # first had its SIGTERM, the end of its session.
    events = [(entry["event"], entry["pid"]) for entry in harness.read_log(log) if entry["event"] in ("start", "sigterm")]
    (first, first_pid), (ended, ended_pid), (second, second_pid) = events[:3]
    assert (first, ended, second) == ("start", "sigterm", "start")
    assert ended_pid == first_pid != second_pid
