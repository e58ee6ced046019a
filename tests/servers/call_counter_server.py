"""A stdlib-only MCP stdio server whose one tool reports how many calls its process has served.

Usage:
    call_counter_server.py --tag TAG [--log FILE] [--grandchild] [--exit-while FILE]

--tag TAG          marks the process (and its grandchild) in /proc/*/cmdline for the tests.
--log FILE         append one JSON line per event: {"event": "start", "pid": ...} when the
                   process starts and {"event": "request", "method": ..., "pid": ...} for
                   every tools/list and tools/call.
--grandchild       at start, spawn a tagged grandchild that ignores stdin and SIGTERM.
--exit-while FILE  exit with status 1 at once, before reading anything, while FILE exists:
                   a test makes the server fail to start, then lets it start again.

Tools:
    served   {"pid", "calls" (tools/call requests this process has answered, this one
             included), "lists" (tools/list requests), "probe" (the SPARE_PROBE variable)}
             as structuredContent and as JSON text. A spare that is never reused answers
             calls == 1, always.
    sleep    sleep `seconds`, then answer as `served` does.
"""

import json
import os
import signal
import subprocess
import sys
import time

COUNTS = {"tools/call": 0, "tools/list": 0}
LOG = None

SERVED_SCHEMA = {"type": "object", "properties": {}}
TOOLS = [
    {"name": "served", "description": "How many calls this process has served.", "inputSchema": SERVED_SCHEMA},
    {"name": "sleep", "description": "Sleep, then answer as served does.",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number", "minimum": 0}}, "required": ["seconds"]}},
]


def log_event(event, **fields):
    if LOG is None:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # one write: lines never interleave
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def served():
    report = {"pid": os.getpid(), "calls": COUNTS["tools/call"], "lists": COUNTS["tools/list"],
              "probe": os.environ.get("SPARE_PROBE")}
    return {"content": [{"type": "text", "text": json.dumps(report)}], "structuredContent": report, "isError": False}


def answer(method, params):
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "call-counter", "version": "1"}}, None
    if method == "ping":
        return {}, None
    if method in COUNTS:
        COUNTS[method] += 1
        log_event("request", method=method)
    if method == "tools/list":
        return {"tools": TOOLS}, None
    if method == "tools/call":
        name = params.get("name")
        if name == "sleep":
            time.sleep(float((params.get("arguments") or {}).get("seconds", 0)))
        elif name != "served":
            return None, {"code": -32602, "message": f"Unknown tool {name!r}"}
        return served(), None
    return None, {"code": -32601, "message": f"Method not found: {method}"}


def serve():
    for raw in iter(sys.stdin.buffer.readline, b""):
        if not raw.strip():
            continue
        message = json.loads(raw)
        if "id" not in message or "method" not in message:
            continue  # notifications and responses
        result, error = answer(message["method"], message.get("params") or {})
        reply = {"jsonrpc": "2.0", "id": message["id"]}
        reply.update({"error": error} if error else {"result": result})
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main(argv):
    global LOG
    tag = argv[argv.index("--tag") + 1]
    LOG = argv[argv.index("--log") + 1] if "--log" in argv else None
    if "--exit-while" in argv and os.path.exists(argv[argv.index("--exit-while") + 1]):
        log_event("start", outcome="exit")
        sys.exit(1)
    log_event("start", outcome="serve")
    if "--grandchild" in argv:
        sleeper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
        subprocess.Popen([sys.executable, "-c", sleeper, "--tag", tag], stdin=subprocess.DEVNULL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
