"""The OAuth token store: 0600 files in a 0700 folder, atomic replacement, an exclusive lock
per record across processes, and summaries that never carry a token."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from gateway_lib.oauth_store import TokenStore, default_oauth_dir, record_key

TOKENS = {"access_token": "at-marker", "refresh_token": "rt-marker", "token_type": "Bearer"}


def test_the_folder_is_0700_and_each_record_0600_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        store = TokenStore(tmp_path / "oauth")
        store.update("k", tokens=TOKENS, expires_at=100.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "oauth").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "oauth" / "k.json").stat().st_mode) == 0o600
    assert store.read("k")["tokens"] == TOKENS


def test_a_write_replaces_the_record_whole_and_leaves_no_temporary_file(tmp_path):
    store = TokenStore(tmp_path / "oauth")
    store.update("k", tokens=TOKENS, client_info={"client_id": "c"})
    store.update("k", tokens=None)
    assert store.read("k") == {"version": 1, "client_info": {"client_id": "c"}}
    assert sorted(path.name for path in (tmp_path / "oauth").iterdir()) == ["k.json"]


def test_an_unreadable_record_counts_as_none(tmp_path):
    (tmp_path / "k.json").write_text("{half a rec")
    assert TokenStore(tmp_path).read("k") == {}


def test_the_summary_shows_presence_and_expiry_never_a_token(tmp_path):
    store = TokenStore(tmp_path)
    assert store.summary("k") == {"signed_in": False}
    store.update("k", tokens=TOKENS, expires_at=1_800_000_000.0)
    summary = store.summary("k", now=1_900_000_000.0)
    assert summary == {"signed_in": True, "expires_at": "2027-01-15T08:00:00Z", "expired": True, "refreshable": True}
    assert "marker" not in repr(summary)


def test_the_record_lock_is_exclusive_across_processes(tmp_path):
    store = TokenStore(tmp_path)
    lock = store.lock("k")
    assert lock.try_acquire()
    probe = ("import sys; from gateway_lib.oauth_store import TokenStore; "
             "sys.exit(0 if TokenStore(sys.argv[1]).lock('k').try_acquire() else 3)")
    held = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], timeout=30)
    lock.release()
    free = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], timeout=30)
    assert held.returncode == 3 and free.returncode == 0


def test_two_descriptors_in_one_process_exclude_each_other_too(tmp_path):
    store = TokenStore(tmp_path)
    first, second = store.lock("k"), store.lock("k")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_records_are_keyed_by_server_url_and_client(tmp_path):
    keys = {record_key("https://a/mcp"), record_key("https://b/mcp"), record_key("https://a/mcp", "cid"),
            record_key("https://a/mcp", "cid", "client_credentials")}
    assert len(keys) == 4 and record_key("https://a/mcp") == record_key("https://a/mcp", None, "authorization_code")


def test_the_folder_is_gateway_oauth_dir_else_under_the_user_config_dir():
    home = Path("/home/u")
    assert default_oauth_dir({"GATEWAY_OAUTH_DIR": "/x"}, home) == Path("/x")
    assert default_oauth_dir({"XDG_CONFIG_HOME": "/cfg"}, home) == Path("/cfg/agent-mcp-gateway/oauth")
    assert default_oauth_dir({}, home) == Path("/home/u/.config/agent-mcp-gateway/oauth")
