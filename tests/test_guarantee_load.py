"""Promise: under load every request is answered exactly once, to the right id, every call
is audited as one whole JSON line, and memory stays bounded.

Wire-level (harness.RawGateway) so that requests can be pipelined far faster than an SDK
client sends them. The memory bound is a bound on a resource (VmRSS), not on time.
"""

from __future__ import annotations

import json
from collections import Counter

import harness

RULES = {"agents": {"dev": {"allow": {"servers": ["tools"]}}, "ops": {"allow": {"servers": ["*"]}}}}
MiB = 1024 * 1024


def call(request_id, name: str, arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def collect(raw: harness.RawGateway, ids: set, timeout: float) -> dict:
    """Reads until every id in `ids` is answered; fails on an answer to an id twice."""
    answers: dict = {}
    while len(answers) < len(ids):
        message = raw.read_message(timeout=timeout)
        key = message.get("id")
        assert key not in answers, f"id {key!r} answered twice"
        if key in ids:
            answers[key] = message
    return answers


def test_fifty_concurrent_execute_tool_calls_are_each_answered_once_to_the_right_id(config_dir, tag):
    audit = config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.raw_gateway("--audit-log", str(audit)) as raw:
        raw.initialize()
        raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools"}},
                    id="warm-up", timeout=30)
        # Ids of both types, with "7" and 7 both in flight: they are different requests.
        ids = [n if n % 2 else str(n) for n in range(50)] + ["7"]
        for request_id in ids:
            raw.send(call(request_id, "execute_tool", {"agent_id": "dev", "server": "tools", "tool": "echo",
                                                       "args": {"text": f"payload {request_id!r}"}}))
        answers = collect(raw, set(ids), timeout=120)
        for request_id in ids:
            answer = answers[request_id]
            assert type(answer["id"]) is type(request_id)
            assert answer["result"]["content"][0]["text"] == f"payload {answer['id']!r}"
        assert harness.wait_no_descendants(raw.pid) == []
    stdout = raw.all_stdout_bytes()
    assert harness.protocol_problems(stdout) == []
    answered = Counter(json.dumps(json.loads(line).get("id")) for line in stdout.splitlines())
    assert all(answered[json.dumps(i)] == 1 for i in ids)
    records = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]  # each line valid JSON
    executed = [r for r in records if r.get("tool") == "execute_tool"]
    assert len(executed) == len(ids)
    assert all(r["outcome"] == "ok" and r["arg_names"] == ["text"] for r in executed)


def test_memory_stays_bounded_over_ten_thousand_calls(config_dir, tag):
    audit = config_dir.path("audit.jsonl")
    config_dir.write({"tools": harness.fault_server(tag)}, RULES)
    with config_dir.raw_gateway("--audit-log", str(audit)) as raw:
        raw.initialize()
        raw.request("tools/call", {"name": "get_server_tools", "arguments": {"agent_id": "dev", "server": "tools"}},
                    timeout=30)
        requests = [
            ("list_servers", {"agent_id": "dev"}),
            ("list_servers", {"agent_id": "ops", "include_metadata": True}),
            ("get_server_tools", {"agent_id": "dev", "server": "tools", "names": "echo"}),
            ("get_server_tools", {"agent_id": "ops", "server": "tools", "pattern": "sl*"}),
            ("list_servers", {"agent_id": "nobody"}),  # an error path too
        ]

        def run(first: int, count: int, batch: int = 500) -> None:
            for start in range(first, first + count, batch):
                ids = set(range(start, start + batch))
                for n in sorted(ids):
                    name, arguments = requests[n % len(requests)]
                    raw.send(call(n, name, arguments))
                for answer in collect(raw, ids, timeout=60).values():
                    assert "result" in answer
                raw._stdout.clear()  # the harness keeps every byte; the test is about the gateway

        run(1_000, 2_000)  # warm-up: caches, metrics series, pool threads, allocator arenas
        before = harness.rss_bytes(raw.pid)
        run(10_000, 10_000)
        after = harness.rss_bytes(raw.pid)
        assert harness.descendants(raw.pid) == []  # all from cache: no server was started
    growth = after - before
    print(f"gateway VmRSS after warm-up {before / MiB:.1f} MiB, after 10,000 calls {after / MiB:.1f} MiB")
    assert growth < 20 * MiB, f"RSS grew by {growth / MiB:.1f} MiB over 10,000 calls"
    lines = [json.loads(line) for line in audit.read_text(encoding="utf-8").splitlines()]
    assert sum(1 for line in lines if line["event"] == "tool_call") == 1 + 2_000 + 10_000
