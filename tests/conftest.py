"""Fixtures every test gets: a tag, a config directory, and three leak checks.

Autouse, in the order they wrap a test:
    user_dirs            HOME, XDG_CACHE_HOME and XDG_CONFIG_HOME of gateways under test
                         point at tmp dirs (harness.gateway_env reads harness.USER_DIRS)
    no_leaked_processes  after the test, no process carrying the test's tag is left
    no_leaked_threads    after the test, no thread it started is still alive

And `shared_dir`, for a gateway that serves every read-only test of one module.
"""

from __future__ import annotations

import threading
import uuid

import pytest

import harness

# How long a thread the test started may take to finish after the test body returns:
# harness threads end within their own close() bounds, so this only absorbs scheduling.
THREAD_JOIN_SECONDS = 5.0


@pytest.fixture
def tag() -> str:
    """A unique marker for this test's processes; see harness.tagged_pids."""
    return uuid.uuid4().hex


@pytest.fixture
def config_dir(tmp_path) -> harness.ConfigDir:
    """An empty ConfigDir under tmp_path; write the two files with .write(servers, rules)."""
    return harness.ConfigDir(tmp_path / "config")


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory) -> harness.SharedDir:
    """For a module-scoped gateway serving tests that only read: a ConfigDir, a tag for its
    servers (not the per-test tag, so the per-test leak check leaves them to this one), and
    user folders. Afterwards no process with that tag may be left."""
    root = tmp_path_factory.mktemp("shared")
    shared = harness.SharedDir(harness.ConfigDir(root / "config"), uuid.uuid4().hex, harness.user_dirs_env(root))
    yield shared
    survivors = harness.wait_no_tagged(shared.tag)
    if survivors:
        harness.kill_tagged(shared.tag)
    assert not survivors, f"The module's shared gateway left tagged processes running: {survivors}"


@pytest.fixture(autouse=True)
def no_leaked_threads():
    before = set(threading.enumerate())
    yield
    started = [thread for thread in threading.enumerate() if thread not in before]
    for thread in started:
        thread.join(THREAD_JOIN_SECONDS)
    alive = [thread.name for thread in started if thread.is_alive()]
    assert not alive, f"The test left threads running: {alive}"


@pytest.fixture(autouse=True)
def no_leaked_processes(tag, no_leaked_threads):
    yield
    survivors = harness.wait_no_tagged(tag)
    if survivors:
        harness.kill_tagged(tag)  # so one leak does not spill into the next test
    assert not survivors, f"The test left tagged processes running: {survivors}"


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    dirs = harness.UserDirs(home=tmp_path / "home", cache=tmp_path / "cache", config=tmp_path / "xdg-config")
    for path in (dirs.home, dirs.cache, dirs.config):
        path.mkdir()
    monkeypatch.setattr(harness, "USER_DIRS", dirs)
    return dirs
