"""A downstream MCP stdio server whose tools come from a JSON file, for end-to-end tests.

Standard library only. It lists the tools of the file exactly as written (any schema, any
description, valid or not) and answers every call without judging its arguments, as a
server that trusts its client would:

    listed_tools_server.py --tag TAG --tools FILE [--log FILE]

--tools FILE  a JSON array of tool definitions, listed as given. A definition may carry
              "x-test-error": {"code": C, "size": N}: a call to that tool is then answered
              with JSON-RPC error C and a message of N characters. The key is not listed.
--log FILE    one JSON line per tools/call: {"event": "call", "tool": NAME, "arg_names": [...]}.
--tag TAG     marks the process, so tests find it in /proc.

Every other call is answered with one text block: the sorted names of its arguments.
"""

import json
import sys

TEST_KEY = "x-test-error"


def main(argv):
    options = dict(zip(argv[::2], argv[1::2]))
    with open(options["--tools"], encoding="utf-8") as handle:
        definitions = json.load(handle)
    tools = {definition.get("name"): definition for definition in definitions}
    listed = [{k: v for k, v in d.items() if k != TEST_KEY} for d in definitions]
    log = options.get("--log")
    for raw in iter(sys.stdin.buffer.readline, b""):
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(message, dict) or "id" not in message or "method" not in message:
            continue
        method, params = message["method"], message.get("params") or {}
        answer = {"jsonrpc": "2.0", "id": message["id"]}
        if method == "initialize":
            answer["result"] = {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                                "capabilities": {"tools": {}}, "serverInfo": {"name": "listed", "version": "1"}}
        elif method == "tools/list":
            answer["result"] = {"tools": listed}
        elif method == "tools/call":
            name, args = params.get("name"), params.get("arguments") or {}
            if log:
                with open(log, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"event": "call", "tool": name, "arg_names": sorted(args)}) + "\n")
            failure = tools.get(name, {}).get(TEST_KEY)
            if failure:
                answer["error"] = {"code": failure["code"], "message": "e" * failure["size"]}
            else:
                answer["result"] = {"content": [{"type": "text", "text": json.dumps(sorted(args))}], "isError": False}
        elif method == "ping":
            answer["result"] = {}
        else:
            answer["error"] = {"code": -32601, "message": f"Method not found: {method}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
