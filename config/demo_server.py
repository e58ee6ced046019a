"""A small MCP server over stdio for the bundled default config and the demo.

Standard library only, so that it starts in milliseconds with any Python 3.11+ and needs
nothing installed. It speaks newline-delimited JSON-RPC: initialize, ping, tools/list,
tools/call.
"""

import datetime
import json
import sys

VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
NOTES = []  # lives as long as this process: one call under the default per-call sessions


def _text(value, structured=None):
    result = {"content": [{"type": "text", "text": str(value)}], "isError": False}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def add(args):
    total = args["a"] + args["b"]
    return _text(total, {"sum": total})


def word_count(args):
    return _text(len(args["text"].split()))


def now(args):
    return _text(datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def add_note(args):
    NOTES.append(args["text"])
    return _text(f"{len(NOTES)} note(s) held")


def delete_all_notes(args):
    NOTES.clear()
    return _text("all notes deleted")


def _number():
    return {"type": "number"}


TOOLS = {
    "add": (add, "Add two numbers.", {"a": _number(), "b": _number()}, ["a", "b"],
            {"type": "object", "properties": {"sum": _number()}, "required": ["sum"]}),
    "word_count": (word_count, "Count the words in a text.", {"text": {"type": "string"}}, ["text"], None),
    "now": (now, "The current UTC time, ISO 8601.", {}, [], None),
    "add_note": (add_note, "Keep a note in this server's memory.", {"text": {"type": "string"}}, ["text"], None),
    "delete_all_notes": (delete_all_notes, "Delete every note.", {}, [], None),
}


def _definition(name):
    _, description, properties, required, output = TOOLS[name]
    tool = {"name": name, "description": description,
            "inputSchema": {"type": "object", "properties": properties, "required": required}}
    if output:
        tool["outputSchema"] = output
    if name == "delete_all_notes":
        tool["annotations"] = {"destructiveHint": True}
    return tool


def handle(method, params):
    if method == "initialize":
        version = params.get("protocolVersion")
        return {"protocolVersion": version if version in VERSIONS else VERSIONS[0],
                "capabilities": {"tools": {}}, "serverInfo": {"name": "demo", "version": "1.0"}}
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": [_definition(name) for name in TOOLS]}
    if method == "tools/call":
        name = params.get("name")
        if name not in TOOLS:
            raise LookupError(f"Unknown tool {name!r}")
        return TOOLS[name][0](params.get("arguments") or {})
    raise NotImplementedError(method)


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "id" not in message or "method" not in message:
            continue  # notifications and responses need no answer
        reply = {"jsonrpc": "2.0", "id": message["id"]}
        try:
            reply["result"] = handle(message["method"], message.get("params") or {})
        except NotImplementedError:
            reply["error"] = {"code": -32601, "message": f"Method {message['method']!r} not found"}
        except (LookupError, TypeError, ValueError) as exc:
            reply["error"] = {"code": -32602, "message": str(exc)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
