"""The client side of the passthrough tests: a recording client and the fixture server's entry.

`Recorder` holds the callbacks an SDK ClientSession gets (sampling, elicitation, roots,
logging) and records what reached the client; `start_gateway` starts the gateway with them.
"""

from __future__ import annotations

import asyncio
import queue
import sys

import mcp_types

import harness

PASSTHROUGH_SERVER = harness.SERVERS_DIR / "passthrough_server.py"


def passthrough_server(tag: str, log, *extra: str, **entry) -> dict:
    return {"command": sys.executable, "args": [str(PASSTHROUGH_SERVER), "--tag", tag, "--log", str(log), *extra], **entry}


def open_rules(**agent) -> dict:
    return {"agents": {"default": {"allow": {"servers": ["*"], **agent}}}}


class Recorder:
    """The client's side: callbacks that record what reached it, and answer as told."""

    def __init__(self):
        self.logs: queue.Queue = queue.Queue()
        self.asked: queue.Queue = queue.Queue()  # (method, params)
        self.withdrawn: queue.Queue = queue.Queue()  # a relayed request the gateway cancelled
        self.never_answer = False
        self.roots_uri = "file:///work/project"  # what roots/list answers (a test may change it)

    async def _wait_or_answer(self, method, params, answer):
        self.asked.put((method, params))
        if not self.never_answer:
            return answer
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.withdrawn.put(method)
            raise

    async def sampling(self, context, params):
        answer = mcp_types.CreateMessageResult(
            role="assistant", content=mcp_types.TextContent(type="text", text="hi"), model="fixture-model")
        return await self._wait_or_answer("sampling/createMessage", params, answer)

    async def elicitation(self, context, params):
        content = {"name": "Ada"} if getattr(params, "mode", "form") != "url" else None
        return await self._wait_or_answer("elicitation/create", params, mcp_types.ElicitResult(action="accept", content=content))

    async def roots(self, context):
        answer = mcp_types.ListRootsResult(roots=[mcp_types.Root(uri=self.roots_uri, name="project")])
        return await self._wait_or_answer("roots/list", None, answer)

    async def logging(self, params):
        self.logs.put(params)

    def session_kwargs(self, sampling=True, elicitation=True, roots=True) -> dict:
        kwargs = {"logging_callback": self.logging}
        if sampling:
            kwargs["sampling_callback"] = self.sampling
        if elicitation:
            kwargs["elicitation_callback"] = self.elicitation
        if roots:
            kwargs["list_roots_callback"] = self.roots
        return kwargs


def start_gateway(config_dir, recorder, *extra, env=None, **caps) -> harness.Gateway:
    gateway = config_dir.gateway("--audit-log", str(config_dir.path("audit.jsonl")), *extra, env=env)
    gateway.session_kwargs = recorder.session_kwargs(**caps)
    return gateway  # started by `with`


def execute(gateway, tool, args=None, timeout_ms=None, progress=None, meta=None, timeout=30):
    arguments = {"server": "fx", "tool": tool, "args": args or {}}
    if timeout_ms is not None:
        arguments["timeout_ms"] = timeout_ms
    coro = gateway.session.call_tool("execute_tool", arguments, progress_callback=progress, meta=meta,
                                     read_timeout_seconds=timeout)
    return gateway._run(coro, timeout + 5)


def answer_of(result) -> dict:
    assert not result.is_error, harness.result_text(result)
    return result.structured_content


def audit_records(config_dir, event="client_request") -> list[dict]:
    return [r for r in harness.read_log(config_dir.path("audit.jsonl")) if r.get("event") == event]
