"""The processes a stdio server started, found through /proc, and how they are ended.

A server is started as the leader of a process group of its own. Killing the group ends
every member at once, but only while the leader is alive: once the leader has been reaped
its pid (the group's id) may be reused, so the group is never signalled after that. A
descendant that left the group (setsid, setpgid) is out of reach of the group signal.
So each server's tree is recorded while the leader lives: every process in its group and
every descendant by parent pid, each with its start time, so that a pid reused later by an
unrelated process is never signalled. What is recorded is ended one by one.

After the leader is reaped the group is not signalled; its members are still found (a
group's id, the leader's pid, is not handed out again while the group has members) and
ended one by one, unless some other process now holds that pid.

Covered: every process in the server's group; every descendant that exists at a
recording (just before the session closes, as its stdin is about to close; after a kept
session's `initialize` and now and then after its calls; before any kill), in the group
or not; and what recorded processes start afterwards. Not covered: a process that left
the group (setsid) and the tree (its parent exited) between two recordings. Without /proc
(not Linux) only the group signal is sent.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable

log = logging.getLogger(__name__)

_PROC = "/proc"

Identity = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time) of `pid`, or None if it is gone (or a zombie)."""
    try:
        fd = os.open(f"{_PROC}/{pid}/stat", os.O_RDONLY)  # os.open: half the cost of open() per file
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not data:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    try:
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[1]), int(fields[2]), int(fields[19])
    except (ValueError, IndexError):  # not the format this module knows: leave the process alone
        return None


def _all_pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir(_PROC) if name.isdigit()]
    except OSError:
        return []


class ProcessTree:
    """One stdio server's processes: its group while the leader lives, and every recorded descendant."""

    def __init__(self, leader: int, reaped: Callable[[], bool]):
        self._leader = leader
        self._reaped = reaped  # () -> bool: whether the leader has been reaped
        self._lock = threading.Lock()
        self._known: set[Identity] = set()
        self._leader_start: int | None = None
        stat = _stat(leader)
        if stat is not None:
            self._leader_start = stat[2]

    def record(self) -> None:
        """Add every live process of the tree to what is known; cheap enough per call (~ms)."""
        leader_alive = not self._reaped() and self._leader_start is not None
        table = {pid: stat for pid in _all_pids() if (stat := _stat(pid)) is not None}
        with self._lock:
            roots = {pid for pid, start in self._known if table.get(pid, (0, 0, -1))[2] == start}
            if leader_alive:
                roots.add(self._leader)
            if leader_alive or self._leader not in table:
                # The group's id is the leader's pid, which Linux does not hand out again
                # while the group has members: with the leader alive, or its pid unused,
                # every process in the group is one the server started.
                roots |= {pid for pid, (_, pgrp, _) in table.items() if pgrp == self._leader}
            found = _descendants(roots, table)
            self._known |= {(pid, table[pid][2]) for pid in found if pid in table}

    def signal_group(self, signum: int) -> None:
        """Signal the server's group, only while its leader has not been reaped."""
        if self._reaped():
            return
        try:
            os.killpg(self._leader, signum)
        except ProcessLookupError:
            pass  # the whole group is already gone
        except PermissionError:
            log.warning("No permission to signal process group %s", self._leader)

    def kill(self) -> None:
        """SIGKILL the group (leader alive) and every recorded process that still is the one recorded."""
        self.record()
        self.signal_group(signal.SIGKILL)
        with self._lock:
            known = set(self._known)
        for pid, start in known:
            stat = _stat(pid)
            if stat is None or stat[2] != start:
                continue  # gone, or its pid now belongs to another process
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                log.warning("No permission to kill process %s", pid)


def _descendants(roots: set[int], table: dict[int, tuple[int, int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo += children.get(pid, [])
    return found
