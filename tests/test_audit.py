"""The audit log: one line per record for every reader, for the owner only, and never in the way of a reply."""

from __future__ import annotations

import json
import os
import stat

import pytest

import harness
from gateway_lib.audit import encode_record
from gateway_lib.errors import INVALID_AGENT_ID

RULES = {"agents": {"dev": {"allow": {"servers": ["*"]}}}}
LINE_BREAKS = ["\u2028", "\u2029", "\u0085"]


def list_servers(raw: harness.RawGateway, agent_id: str) -> dict:
    return raw.request("tools/call", {"name": "list_servers", "arguments": {"agent_id": agent_id}}, timeout=30)


@pytest.mark.parametrize("char", LINE_BREAKS, ids=["U+2028", "U+2029", "U+0085"])
def test_a_character_that_splits_lines_is_escaped_so_a_record_stays_one_line(char):
    record = {"agent": f"a{char}b", "tool": "list_servers"}
    line = encode_record(record)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert len(line.decode("utf-8").splitlines()) == 1
    assert json.loads(line) == record


def test_a_lone_surrogate_is_written_as_a_valid_escaped_line():
    record = {"agent": "\ud800"}
    line = encode_record(record)
    assert json.loads(line.decode("utf-8")) == record


def test_a_refused_call_audits_the_agent_id_it_attempted_and_the_decision(config_dir):
    config_dir.write({}, RULES)
    audit = config_dir.path("audit.jsonl")
    attempted = "ghost\u2028\u2029\u0085\"x"
    with config_dir.raw_gateway("--audit-log", str(audit)) as raw:
        raw.initialize(announce=False)  # no server here: the SDK import it would start only delays the exit
        answer = list_servers(raw, attempted)
        assert answer["result"]["isError"] is True
        list_servers(raw, "dev")
    lines = audit.read_text(encoding="utf-8").splitlines()  # the splitter that broke on U+2028
    records = [json.loads(line) for line in lines]
    calls = [record for record in records if record["event"] == "tool_call"]
    assert len(calls) == 2
    assert calls[0]["agent"] == attempted
    assert calls[0]["decision"] == "deny" and calls[0]["error_code"] == INVALID_AGENT_ID
    assert calls[1]["agent"] == "dev" and calls[1]["outcome"] == "ok"


def test_the_audit_file_is_created_readable_and_writable_by_its_owner_only(config_dir):
    config_dir.write({}, RULES)
    audit = config_dir.path("audit.jsonl")
    with config_dir.raw_gateway("--audit-log", str(audit)) as raw:
        raw.initialize(announce=False)  # no server here: the SDK import it would start only delays the exit
        list_servers(raw, "dev")
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


def test_an_audit_log_that_is_a_fifo_never_holds_up_a_reply(config_dir):
    config_dir.write({}, RULES)
    fifo = config_dir.path("audit.fifo")
    os.mkfifo(fifo)  # nobody reads it: opening it to write would block for ever
    with config_dir.raw_gateway("--audit-log", str(fifo)) as raw:
        raw.initialize(announce=False)  # no server here: the SDK import it would start only delays the exit
        for _ in range(2):
            assert list_servers(raw, "dev")["result"]["isError"] is False
    assert raw.process.returncode == 0
    errors = [line for line in raw.stderr_text().splitlines() if "Audit log" in line]
    assert len(errors) == 1 and "FIFO" in errors[0]


def test_an_audit_log_on_a_full_device_is_one_clear_log_line_and_a_clean_exit(config_dir):
    config_dir.write({}, RULES)
    with config_dir.raw_gateway("--audit-log", "/dev/full") as raw:
        raw.initialize(announce=False)  # no server here: the SDK import it would start only delays the exit
        for _ in range(2):
            assert list_servers(raw, "dev")["result"]["isError"] is False
    assert raw.process.returncode == 0
    stderr = raw.stderr_text()
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "Audit log" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0]
