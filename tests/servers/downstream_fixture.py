"""A tiny stdlib-only MCP server over stdio, for tests/test_downstream.py.

    python downstream_fixture.py --tag TAG [--mode MODE]

TAG only marks the process (and its grandchild) so a test can find it in /proc.
Modes: serve (default), exit (exit 3 at once), mute (read requests, never answer),
grandchild (start a child that ignores stdin and SIGTERM and sleeps forever, then serve).
"""

import json
import os
import subprocess
import sys
import time

PAGE_SIZE = 3
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="

TOOLS = [
    {"name": "echo", "description": "Echo text.",
     "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
    {"name": "blocks", "description": "One content block of every type.", "inputSchema": {"type": "object"},
     "title": "All blocks", "annotations": {"readOnlyHint": True}, "_meta": {"fixture/x": 1}},
    {"name": "structured", "description": "Structured content.", "inputSchema": {"type": "object"},
     "outputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
    {"name": "fail", "description": "A tool error.", "inputSchema": {"type": "object"}},
    {"name": "sleep", "description": "Sleep, then answer.",
     "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}}}},
    {"name": "crash", "description": "Die mid-call.", "inputSchema": {"type": "object"}},
    {"name": "rpc_error", "description": "Answer with a JSON-RPC error.", "inputSchema": {"type": "object"}},
    {"name": "env", "description": "Read an environment variable.",
     "inputSchema": {"type": "object", "properties": {"name": {"type": "string"}}}},
    {"name": "cwd", "description": "The working directory.", "inputSchema": {"type": "object"}},
]


def text(value):
    return {"content": [{"type": "text", "text": value}], "isError": False}


def call_tool(name, args):
    """Returns (result, error) for one tools/call."""
    if name == "echo":
        return text(args.get("text", "")), None
    if name == "blocks":
        return {"content": [
            {"type": "text", "text": "hi", "annotations": {"audience": ["user"]}},
            {"type": "image", "data": PNG_1PX, "mimeType": "image/png"},
            {"type": "audio", "data": "UklGRg==", "mimeType": "audio/wav"},
            {"type": "resource_link", "uri": "file:///tmp/a.txt", "name": "a.txt", "mimeType": "text/plain"},
            {"type": "resource", "resource": {"uri": "file:///tmp/b.txt", "mimeType": "text/plain", "text": "bee"}},
        ], "isError": False}, None
    if name == "structured":
        return {"content": [{"type": "text", "text": '{"n": 7}'}], "structuredContent": {"n": 7}}, None
    if name == "fail":
        return {"content": [{"type": "text", "text": "it broke"}], "isError": True}, None
    if name == "sleep":
        time.sleep(float(args.get("seconds", 60)))
        return text("slept"), None
    if name == "crash":
        os._exit(9)
    if name == "rpc_error":
        return None, {"code": -32050, "message": "database is locked"}
    if name == "env":
        return text(os.environ.get(args["name"], "<unset>")), None
    if name == "cwd":
        return text(os.getcwd()), None
    return None, {"code": -32602, "message": f"Unknown tool: {name}"}


def answer(request):
    method, params = request.get("method"), request.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "fixture", "version": "1"}}, None
    if method == "tools/list":
        start = int(params.get("cursor") or 0)
        result = {"tools": TOOLS[start:start + PAGE_SIZE]}
        if start + PAGE_SIZE < len(TOOLS):
            result["nextCursor"] = str(start + PAGE_SIZE)
        return result, None
    if method == "tools/call":
        return call_tool(params["name"], params.get("arguments") or {})
    if method == "ping":
        return {}, None
    return None, {"code": -32601, "message": "Method not found"}


def serve(mute):
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request or mute:
            continue
        result, error = answer(request)
        reply = {"jsonrpc": "2.0", "id": request["id"]}
        reply.update({"error": error} if error else {"result": result})
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def main():
    tag = sys.argv[sys.argv.index("--tag") + 1]
    mode = sys.argv[sys.argv.index("--mode") + 1] if "--mode" in sys.argv else "serve"
    print(f"fixture {mode} starting", file=sys.stderr)
    if mode == "exit":
        sys.exit(3)
    if mode == "grandchild":
        sleeper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"
        subprocess.Popen([sys.executable, "-c", sleeper, "--tag", tag])
    serve(mute=mode == "mute")


if __name__ == "__main__":
    main()
