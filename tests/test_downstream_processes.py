"""gateway_lib.downstream.processes against real processes: what is recorded, what is signalled."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

import harness
from gateway_lib.downstream import processes
from gateway_lib.downstream.processes import ProcessTree

# A group leader that starts one tagged child (in its group, or in a session of its own),
# prints the child's pid, and exits when its stdin closes.
LEADER = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, sys.argv[1], "--grandchild", "--tag", sys.argv[2]],
                             start_new_session=sys.argv[3] == "setsid")
    print(child.pid, flush=True)
    sys.stdin.read()
""")


def start_leader(tag: str, how: str) -> tuple[subprocess.Popen, int]:
    leader = subprocess.Popen([sys.executable, "-c", LEADER, str(harness.FAULT_SERVER), tag, how],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, text=True)
    return leader, int(leader.stdout.readline())


def reap(leader: subprocess.Popen) -> None:
    leader.stdin.close()
    leader.wait(timeout=10)
    leader.stdout.close()


def alive(pid: int) -> bool:
    return processes._stat(pid) is not None


@pytest.mark.parametrize("how", ["group", "setsid"])
def test_what_was_recorded_while_the_leader_lived_is_killed_after_it_was_reaped(tag, how):
    leader, child = start_leader(tag, how)
    tree = ProcessTree(leader.pid, reaped=lambda: leader.returncode is not None)
    tree.record()
    reap(leader)
    assert alive(child)

    tree.kill()

    assert harness.wait_until(lambda: not alive(child), timeout=10)


def test_a_group_whose_leader_was_reaped_is_never_signalled_but_its_members_are_found(tag, monkeypatch):
    leader, child = start_leader(tag, "group")
    tree = ProcessTree(leader.pid, reaped=lambda: leader.returncode is not None)
    reap(leader)  # nothing recorded: the member is found by its group id alone
    signalled_groups: list[int] = []
    monkeypatch.setattr(processes.os, "killpg", lambda pgid, signum: signalled_groups.append(pgid))

    tree.signal_group(signal.SIGTERM)
    tree.kill()

    assert signalled_groups == []
    assert harness.wait_until(lambda: not alive(child), timeout=10)

