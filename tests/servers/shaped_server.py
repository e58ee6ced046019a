"""A stdlib-only MCP stdio server whose tool list and result sizes a test chooses.

    shaped_server.py --tag TAG [--tools FILE]

--tools FILE   a JSON list of tool definitions, read at each start (so a test can change a
               description between two runs); without it, the built-in list below.

Every tool answers by its name, whatever its definition says:
    big_text {size, blocks}    `blocks` text blocks (default 1) of `size` characters each
    big_image {size}           a caption of `size` characters and a PNG image block with as much data
    big_structured {size}      structuredContent {"items": [...]} and the same data as JSON text
    big_error {size}           isError true, with `size` characters of text
    anything else              one text block: "<name> called"
"""

import json
import sys

PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
SIZE = {"type": "object", "properties": {"size": {"type": "integer"}, "blocks": {"type": "integer"}}}

BUILT_IN = [
    {"name": "big_text", "description": "Return text of a chosen size.", "inputSchema": SIZE},
    {"name": "big_image", "description": "Return a caption and an image.", "inputSchema": SIZE},
    {"name": "big_structured", "description": "Return structured content.", "inputSchema": SIZE},
    {"name": "big_error", "description": "Fail with a long message.", "inputSchema": SIZE},
]


def entry(tag, tools_file=None, **extra):
    """A `.mcp.json` entry that launches this server; `extra` adds keys such as description=."""
    args = [__file__, "--tag", tag] + (["--tools", str(tools_file)] if tools_file else [])
    return {"command": sys.executable, "args": args, **extra}


def text(value):
    return {"type": "text", "text": value}


def call(name, args):
    size = int(args.get("size", 10))
    if name == "big_text":
        return {"content": [text(chr(ord("a") + i % 26) * size) for i in range(int(args.get("blocks", 1)))]}
    if name == "big_image":
        data = (PNG_1X1 * (size // len(PNG_1X1) + 1))[:max(size - size % 4, 4)]
        return {"content": [text("c" * size), {"type": "image", "data": data, "mimeType": "image/png"}]}
    if name == "big_structured":
        value = {"items": ["x" * 10] * max(size // 13, 1)}
        return {"content": [text(json.dumps(value))], "structuredContent": value}
    if name == "big_error":
        return {"content": [text("E" * size)], "isError": True}
    return {"content": [text(f"{name} called")]}


def answer(request, tools):
    method, params = request.get("method"), request.get("params") or {}
    if method == "initialize":
        return {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}}, "serverInfo": {"name": "shaped", "version": "1"}}, None
    if method == "tools/list":
        return {"tools": tools}, None
    if method == "tools/call":
        return call(params.get("name"), params.get("arguments") or {}), None
    if method == "ping":
        return {}, None
    return None, {"code": -32601, "message": "Method not found"}


def main():
    argv = sys.argv[1:]
    tools = BUILT_IN
    if "--tools" in argv:
        with open(argv[argv.index("--tools") + 1], encoding="utf-8") as file:
            tools = json.load(file)
    for line in sys.stdin:
        request = json.loads(line)
        if "id" not in request:
            continue
        result, error = answer(request, tools)
        reply = {"jsonrpc": "2.0", "id": request["id"]}
        reply.update({"error": error} if error else {"result": result})
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
