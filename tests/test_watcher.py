"""The config watcher: its debouncer, and the file events it turns into reloads.

The reloader here is a stand-in that reads the file when asked and reports what it read,
so each test sees exactly which reloads happened, in order, and what they found.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import pytest

from gateway_lib.reload import GATEWAY_RULES, MCP_CONFIG
from gateway_lib.watcher import ConfigWatcher, Debouncer, _Handler

WAIT_S = 10  # bound on any one wait; generous, the machine is shared
QUIET_S = 0.1  # the watchers here debounce faster than the gateway's 300 ms


class RecordingReloader:
    """Stands in for reload.Reloader: puts (kind, file text or None) on `reloads`."""

    def __init__(self, mcp_path: Path, rules_path: Path):
        self.paths = {MCP_CONFIG: str(mcp_path), GATEWAY_RULES: str(rules_path)}
        self.reloads: queue.Queue = queue.Queue()
        self.failures_left = 0
        self.gate = threading.Event()  # each reload, having read, waits for it
        self.gate.set()

    def reload_servers(self) -> bool:
        return self._reload(MCP_CONFIG)

    def reload_rules(self) -> bool:
        return self._reload(GATEWAY_RULES)

    def _reload(self, kind: str) -> bool:
        path = Path(self.paths[kind])
        self.reloads.put((kind, path.read_text(encoding="utf-8") if path.exists() else None))
        assert self.gate.wait(WAIT_S)
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("deliberate failure in the reloader")
        return True

    def next(self) -> tuple[str, str | None]:
        return self.reloads.get(timeout=WAIT_S)


@pytest.fixture
def files(tmp_path):
    mcp, rules = tmp_path / ".mcp.json", tmp_path / ".mcp-gateway-rules.json"
    mcp.write_text("servers v1", encoding="utf-8")
    rules.write_text("rules v1", encoding="utf-8")
    return mcp, rules


@pytest.fixture
def start_watcher():
    started = []

    def start(reloader) -> ConfigWatcher:
        watcher = ConfigWatcher(reloader, delay_s=QUIET_S)
        watcher.start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()
        watcher.join(WAIT_S)


@pytest.fixture
def debouncers():
    started = []

    def start(flush, **options) -> Debouncer:
        debouncer = Debouncer(flush, **options)
        debouncer.start()
        started.append(debouncer)
        return debouncer

    yield start
    for debouncer in started:
        debouncer.stop()
        debouncer.join(WAIT_S)


# --- the debouncer -------------------------------------------------------------------


def test_a_burst_of_pushes_is_flushed_once(debouncers):
    flushed: queue.Queue = queue.Queue()
    debouncer = debouncers(flushed.put, delay_s=0.5)
    for _ in range(20):
        debouncer.push([MCP_CONFIG])
    assert flushed.get(timeout=WAIT_S) == {MCP_CONFIG}
    debouncer.push([GATEWAY_RULES])
    # Had the burst given a second flush, it would come before this one.
    assert flushed.get(timeout=WAIT_S) == {GATEWAY_RULES}


def test_keys_pushed_together_are_flushed_together(debouncers):
    flushed: queue.Queue = queue.Queue()
    debouncer = debouncers(flushed.put, delay_s=0.5)
    debouncer.push([MCP_CONFIG])
    debouncer.push([GATEWAY_RULES])
    assert flushed.get(timeout=WAIT_S) == {MCP_CONFIG, GATEWAY_RULES}


def test_pushes_that_never_pause_are_still_flushed_by_the_maximum_delay(debouncers):
    flushed: queue.Queue = queue.Queue()
    debouncer = debouncers(flushed.put, delay_s=60, max_delay_s=0.3)
    for _ in range(int(WAIT_S / 0.02)):
        debouncer.push([MCP_CONFIG])
        try:
            assert flushed.get(timeout=0.02) == {MCP_CONFIG}
            return
        except queue.Empty:
            continue
    pytest.fail("Continuous pushes were never flushed")


def test_an_immediate_push_does_not_wait_for_quiet(debouncers):
    flushed: queue.Queue = queue.Queue()
    debouncer = debouncers(flushed.put, delay_s=600)
    debouncer.push([MCP_CONFIG, GATEWAY_RULES], immediate=True)
    assert flushed.get(timeout=WAIT_S) == {MCP_CONFIG, GATEWAY_RULES}


def test_a_flush_that_raises_does_not_stop_the_debouncer(debouncers):
    flushed: queue.Queue = queue.Queue()

    def flush(keys):
        flushed.put(keys)
        raise RuntimeError("deliberate failure in a flush")

    debouncer = debouncers(flush, delay_s=0.01)
    debouncer.push([MCP_CONFIG])
    assert flushed.get(timeout=WAIT_S) == {MCP_CONFIG}
    debouncer.push([GATEWAY_RULES])
    assert flushed.get(timeout=WAIT_S) == {GATEWAY_RULES}
    assert debouncer.is_alive()


def test_stop_ends_the_thread_even_with_a_flush_pending(debouncers):
    debouncer = debouncers(lambda keys: None, delay_s=600)
    debouncer.push([MCP_CONFIG])
    debouncer.stop()
    debouncer.join(WAIT_S)
    assert not debouncer.is_alive()


# --- file events -------------------------------------------------------------------------


def write_in_place(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:  # truncate, then write, as most tools do
        handle.write(text)


def write_and_rename(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".swp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def delete_and_recreate(path: Path, text: str) -> None:
    path.unlink()
    path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("save", [write_in_place, write_and_rename, delete_and_recreate],
                         ids=["in-place write", "temp file renamed over", "delete then re-create"])
def test_every_way_of_saving_reloads_the_file_that_changed(files, start_watcher, save):
    mcp, rules = files
    reloader = RecordingReloader(mcp, rules)
    start_watcher(reloader)
    save(rules, "rules v2")
    assert reloader.next() == (GATEWAY_RULES, "rules v2")
    save(mcp, "servers v2")
    assert reloader.next() == (MCP_CONFIG, "servers v2")


def test_a_burst_of_writes_is_coalesced_and_its_last_reload_sees_the_last_write(files, start_watcher):
    mcp, rules = files
    reloader = RecordingReloader(mcp, rules)
    reloader.gate.clear()  # a reload started mid-burst (the machine paused) holds the rest back
    start_watcher(reloader)
    for n in range(30):
        write_in_place(rules, f"rules v{n}")
    reloader.gate.set()
    seen = [reloader.next()]
    while seen[-1] != (GATEWAY_RULES, "rules v29"):
        seen.append(reloader.next())
    # Whatever the timing: at most one reload during the burst, then one for all the rest.
    assert len(seen) <= 2 and {kind for kind, _ in seen} == {GATEWAY_RULES}
    write_in_place(mcp, "servers v2")
    assert reloader.next() == (MCP_CONFIG, "servers v2")


def test_reading_the_files_does_not_trigger_reloads(files, start_watcher):
    mcp, rules = files
    reloader = RecordingReloader(mcp, rules)  # reads the file on every reload
    start_watcher(reloader)
    write_in_place(mcp, "servers v2")
    assert reloader.next() == (MCP_CONFIG, "servers v2")
    for _ in range(5):
        mcp.read_text(encoding="utf-8")
    write_in_place(rules, "rules v2")
    # The servers file reloads first within a batch: a reload caused by reading would show.
    assert reloader.next() == (GATEWAY_RULES, "rules v2")


def test_other_files_in_the_directory_are_ignored(files, start_watcher):
    mcp, rules = files
    reloader = RecordingReloader(mcp, rules)
    start_watcher(reloader)
    write_in_place(mcp.with_name("notes.json"), "{}")
    write_in_place(mcp.with_name(".mcp.json.bak"), "{}")
    write_in_place(rules, "rules v2")
    assert reloader.next() == (GATEWAY_RULES, "rules v2")


def test_a_reloader_that_raises_does_not_stop_the_watcher(files, start_watcher):
    mcp, rules = files
    reloader = RecordingReloader(mcp, rules)
    reloader.failures_left = 1
    watcher = start_watcher(reloader)
    write_in_place(rules, "rules v2")
    assert reloader.next() == (GATEWAY_RULES, "rules v2")
    write_in_place(rules, "rules v3")
    assert reloader.next() == (GATEWAY_RULES, "rules v3")
    assert watcher.is_alive()


def test_an_event_handler_that_raises_never_reaches_the_observer():
    handled = []

    def broken(event):
        handled.append(event)
        raise RuntimeError("deliberate failure in a handler")

    event = object()
    _Handler(broken).dispatch(event)  # would raise into watchdog's thread otherwise
    assert handled == [event]


def test_a_request_reloads_both_files_without_a_change(files, start_watcher):
    mcp, rules = files
    reloader = RecordingReloader(mcp, rules)
    watcher = start_watcher(reloader)
    watcher.request_reload()
    assert {reloader.next(), reloader.next()} == {(MCP_CONFIG, "servers v1"), (GATEWAY_RULES, "rules v1")}


def symlinked_rules(tmp_path: Path, start_watcher) -> tuple[RecordingReloader, Path]:
    """A watched project whose rules file is a symlink into dotfiles/ (holding "first v1")."""
    link_dir, first_dir = tmp_path / "project", tmp_path / "dotfiles"
    for directory in (link_dir, first_dir):
        directory.mkdir()
    (first_dir / "rules.json").write_text("first v1", encoding="utf-8")
    rules = link_dir / ".mcp-gateway-rules.json"
    rules.symlink_to(first_dir / "rules.json")
    mcp = link_dir / ".mcp.json"
    mcp.write_text("servers v1", encoding="utf-8")
    reloader = RecordingReloader(mcp, rules)
    start_watcher(reloader)
    return reloader, rules


def re_point(link: Path, target: Path) -> None:
    new_link = link.with_name("retarget.tmp")
    new_link.symlink_to(target)
    os.replace(new_link, link)  # what `ln -sfn` does


def test_a_symlinked_config_reloads_when_its_target_or_the_link_changes(tmp_path, start_watcher):
    reloader, rules = symlinked_rules(tmp_path, start_watcher)
    second_dir = tmp_path / "other"
    second_dir.mkdir()
    (second_dir / "rules.json").write_text("second v1", encoding="utf-8")

    write_in_place(tmp_path / "dotfiles" / "rules.json", "first v2")  # edited where it really lives
    assert reloader.next() == (GATEWAY_RULES, "first v2")

    re_point(rules, second_dir / "rules.json")
    assert reloader.next() == (GATEWAY_RULES, "second v1")

    write_and_rename(second_dir / "rules.json", "second v2")  # the new target is watched too
    assert reloader.next() == (GATEWAY_RULES, "second v2")


@pytest.mark.parametrize("depth", [1, 2], ids=["its directory", "its directory's parent too"])
def test_a_symlink_re_pointed_at_a_directory_still_to_be_made_reloads_once_it_appears(tmp_path, start_watcher, depth):
    reloader, rules = symlinked_rules(tmp_path, start_watcher)
    later = tmp_path / "later" / "deeper" if depth == 2 else tmp_path / "later"
    re_point(rules, later / "rules.json")
    assert reloader.next() == (GATEWAY_RULES, None)  # re-pointed at nothing yet

    later.mkdir(parents=True)
    (later / "rules.json").write_text("later v1", encoding="utf-8")
    seen = reloader.next()
    if seen == (GATEWAY_RULES, None):  # the directory's event came before the file was written
        seen = reloader.next()
    assert seen == (GATEWAY_RULES, "later v1")
    write_and_rename(later / "rules.json", "later v2")  # and from now on it is watched there
    assert reloader.next() == (GATEWAY_RULES, "later v2")
