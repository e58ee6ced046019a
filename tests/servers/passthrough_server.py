"""A downstream MCP stdio server that does during a call everything a server may do.

Standard library only, so it starts in a few tens of milliseconds. Each tools/call runs on
its own thread, so the server keeps reading while a tool waits for the client's answer to
one of its own requests.

Usage:
    passthrough_server.py --tag TAG [--log FILE] [--only-2026]

--tag TAG     required marker; tests find every process of one test by it.
--log FILE    one JSON line per event: "initialize" (with the client's capabilities),
              "discover", "call" (tool, _meta, capabilities), "answer" (the client's
              answer to a request of this server: method, result or error code),
              "cancelled" (request id).
--only-2026   speak only 2026-07-28: answer server/discover, refuse initialize with
              -32022, read the version and capabilities from each request's _meta,
              and ask for sampling, elicitation and roots with input_required results
              (the retry carries inputResponses and the requestState handed out).

Tools (legacy era unless noted):
    progress {steps, delay_ms}   a progress notification per step (under the request's
                                 progressToken, if any), delay_ms apart; then "done"
    log {}                       one log message at debug, info and warning (the warning
                                 under logger "worker"); then "logged"
    sample {prompt}              sampling/createMessage; returns the client's answer
    elicit {}                    form-mode elicitation/create; returns the answer
    elicit_url {}                URL-mode elicitation/create; returns the answer
    roots {}                     roots/list; returns the answer
    ask_twice {}                 form-mode elicitation/create, then roots/list; returns both answers
    elicit_progress {}           form-mode elicitation/create, then one progress notification
                                 (under the request's progressToken); returns the answer
    roots_later {delay_ms, when_exists}
                                 returns "scheduled" at once; delay_ms later (no call in flight
                                 then), and once the file when_exists names exists (if given),
                                 asks roots/list, and logs the answer
    wait_cancel {}               never answers; logs "cancelled" when the cancel arrives
    meta {}                      returns the request's _meta; result _meta is {"fixture/seen": true}
    sampling_only {}             listed only to clients that declared sampling
    list_in_2026 (2026 only)     returns an array as structuredContent
Each returns the answer it got as structuredContent {"answer": ...} or {"error": {...}}.
"""

import itertools
import json
import os
import queue
import sys
import threading
import time

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN = "2026-07-28"
VERSION_KEY = "io.modelcontextprotocol/protocolVersion"
CAPS_KEY = "io.modelcontextprotocol/clientCapabilities"
UNSUPPORTED_PROTOCOL_VERSION = -32022
METHOD_NOT_FOUND = -32601
ANSWER_WAIT_S = 60  # bound on waiting for the client's answer

LOG_FILE = None
ONLY_2026 = False
CLIENT_CAPS = {}
WRITE_LOCK = threading.Lock()
PENDING = {}  # our request id -> queue for its answer
PENDING_LOCK = threading.Lock()
IDS = itertools.count(1)
CANCELLED = {}  # client request id -> threading.Event


def log_event(event, **fields):
    if LOG_FILE is None:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n"
    fd = os.open(LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def send(message):
    with WRITE_LOCK:
        sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
        sys.stdout.flush()


def notify(method, params):
    send({"jsonrpc": "2.0", "method": method, "params": params})


def ask(method, params):
    """Send a request to the client and wait for its answer: ("result", value) or ("error", error)."""
    request_id = f"srv-{next(IDS)}"
    answer = queue.Queue(maxsize=1)
    with PENDING_LOCK:
        PENDING[request_id] = answer
    send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    try:
        kind, value = answer.get(timeout=ANSWER_WAIT_S)
    except queue.Empty:
        kind, value = "error", {"code": -1, "message": "no answer"}
    roots = value.get("roots") if kind == "result" and method == "roots/list" else None
    log_event("answer", method=method, kind=kind, code=value.get("code") if kind == "error" else None, roots=roots)
    return kind, value


def answer_result(value, kind="result"):
    payload = {"answer": value} if kind == "result" else {"error": value}
    return {"content": [{"type": "text", "text": json.dumps(payload)}], "structuredContent": payload, "isError": False}


def text(value):
    return {"content": [{"type": "text", "text": value}], "isError": False}


OBJECT = {"type": "object", "properties": {}}
SAMPLE_PARAMS = {"messages": [{"role": "user", "content": {"type": "text", "text": "Say hi"}}], "maxTokens": 20}
FORM_PARAMS = {"mode": "form", "message": "Your name?",
               "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}
URL_PARAMS = {"mode": "url", "message": "Sign in", "url": "https://example.invalid/signin", "elicitationId": "e-1"}
# A 2026-07-28 tool definition: 2020-12 keywords, an array as output (tests compare against it).
LIST_IN_2026 = {
    "name": "list_in_2026",
    "description": "A 2026 tool: 2020-12 schema keywords, an array as structured content.",
    "inputSchema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                    "$defs": {"n": {"type": "integer"}}, "properties": {"n": {"$ref": "#/$defs/n"}},
                    "unevaluatedProperties": False},
    "outputSchema": {"type": "array", "items": {"type": "integer"}},
}
INTERACTIVE = {"sample": ("sampling/createMessage", SAMPLE_PARAMS), "elicit": ("elicitation/create", FORM_PARAMS),
               "elicit_url": ("elicitation/create", URL_PARAMS), "roots": ("roots/list", {})}


def tool_definitions(caps):
    names = ["progress", "log", "sample", "elicit", "elicit_url", "roots", "wait_cancel", "meta", "ask_twice",
             "elicit_progress", "roots_later"]
    tools = [{"name": name, "description": f"The {name} fixture.", "inputSchema": dict(OBJECT)} for name in names]
    tools[0]["inputSchema"] = {"type": "object", "properties": {"steps": {"type": "integer"}, "delay_ms": {"type": "integer"}}}
    if "sampling" in caps:
        tools.append({"name": "sampling_only", "description": "Only for sampling clients.", "inputSchema": dict(OBJECT)})
    if ONLY_2026:
        tools.append(json.loads(json.dumps(LIST_IN_2026)))
    return tools


def run_tool(request_id, name, args, meta, caps):
    token = meta.get("progressToken")
    if name == "progress":
        for step in range(1, int(args.get("steps", 3)) + 1):
            time.sleep(int(args.get("delay_ms", 0)) / 1000)
            if token is not None:
                notify("notifications/progress", {"progressToken": token, "progress": step,
                                                  "total": int(args.get("steps", 3)), "message": f"step {step}"})
        return text("done")
    if name == "log":
        notify("notifications/message", {"level": "debug", "data": "a debug line"})
        notify("notifications/message", {"level": "info", "data": "an info line"})
        notify("notifications/message", {"level": "warning", "logger": "worker", "data": {"disk": "low"}})
        return text("logged")
    if name in INTERACTIVE:
        method, params = INTERACTIVE[name]
        kind, value = ask(method, params)
        return answer_result(value, kind)
    if name == "ask_twice":
        first = ask(*INTERACTIVE["elicit"])
        second = ask(*INTERACTIVE["roots"])
        return answer_result({"elicit": first[1], "roots": second[1]})
    if name == "elicit_progress":
        kind, value = ask(*INTERACTIVE["elicit"])
        if token is not None:
            notify("notifications/progress", {"progressToken": token, "progress": 1, "message": "answered"})
        return answer_result(value, kind)
    if name == "roots_later":
        def later():
            time.sleep(int(args.get("delay_ms", 300)) / 1000)
            signal, waited = args.get("when_exists"), 0.0
            while signal and not os.path.exists(signal) and waited < ANSWER_WAIT_S:
                time.sleep(0.02)
                waited += 0.02
            ask("roots/list", {})
        threading.Thread(target=later, daemon=True).start()
        return text("scheduled")
    if name == "wait_cancel":
        event = CANCELLED.setdefault(request_id, threading.Event())
        if event.wait(ANSWER_WAIT_S):
            return None  # cancelled: never answered
        return text("not cancelled")
    if name == "meta":
        result = answer_result(meta)
        result["_meta"] = {"fixture/seen": True}
        return result
    if name == "sampling_only":
        return text("sampled")
    if name == "list_in_2026":
        return {"content": [{"type": "text", "text": "[1, 2, 3]"}], "structuredContent": [1, 2, 3], "isError": False}
    raise KeyError(name)


def run_tool_2026(name, params, meta):
    """The 2026-07-28 form of the interactive tools: input_required, then the retry."""
    if name not in INTERACTIVE:
        return run_tool(None, name, params.get("arguments") or {}, meta, {})
    responses = params.get("inputResponses")
    if responses is None:
        method, request_params = INTERACTIVE[name]
        return {"resultType": "input_required", "requestState": f"state-{name}",
                "inputRequests": {"q1": {"method": method, "params": request_params}}}
    log_event("answer", method=INTERACTIVE[name][0], kind="result", state=params.get("requestState"))
    return answer_result({"state": params.get("requestState"), "responses": responses})


def handle_call(request_id, params):
    meta = params.get("_meta") or {}
    caps = meta.get(CAPS_KEY, {}) if ONLY_2026 else CLIENT_CAPS
    name = params.get("name")
    log_event("call", tool=name, meta=meta, capabilities=caps)
    try:
        if ONLY_2026:
            result = run_tool_2026(name, params, meta)
            result.setdefault("resultType", "complete")
        else:
            result = run_tool(request_id, name, params.get("arguments") or {}, meta, caps)
    except KeyError:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"Unknown tool {name!r}"}})
        return
    if result is not None:
        send({"jsonrpc": "2.0", "id": request_id, "result": result})


def handle_request(message):
    global CLIENT_CAPS
    request_id, method, params = message["id"], message["method"], message.get("params") or {}

    def reply(result):
        send({"jsonrpc": "2.0", "id": request_id, "result": result})

    def error(code, text_, data=None):
        body = {"code": code, "message": text_}
        if data is not None:
            body["data"] = data
        send({"jsonrpc": "2.0", "id": request_id, "error": body})

    if method == "initialize":
        if ONLY_2026:
            return error(UNSUPPORTED_PROTOCOL_VERSION, "This server speaks only 2026-07-28",
                         {"supported": [MODERN], "requested": params.get("protocolVersion")})
        CLIENT_CAPS = params.get("capabilities") or {}
        log_event("initialize", capabilities=CLIENT_CAPS)
        version = params.get("protocolVersion")
        return reply({"protocolVersion": version if version in HANDSHAKE_VERSIONS else HANDSHAKE_VERSIONS[-1],
                      "capabilities": {"tools": {}, "logging": {}},
                      "serverInfo": {"name": "passthrough-fixture", "version": "1"}})
    if method == "server/discover":
        if not ONLY_2026:
            return error(METHOD_NOT_FOUND, "Method not found")
        log_event("discover")
        return reply({"supportedVersions": [MODERN], "capabilities": {"tools": {}}, "resultType": "complete",
                      "ttlMs": 0, "cacheScope": "public"})
    if method == "ping":
        return reply({})
    if method == "logging/setLevel":
        return reply({})
    if method == "tools/list":
        if ONLY_2026:
            caps = (params.get("_meta") or {}).get(CAPS_KEY, {})
            return reply({"tools": tool_definitions(caps), "resultType": "complete", "ttlMs": 0, "cacheScope": "public"})
        return reply({"tools": tool_definitions(CLIENT_CAPS)})
    if method == "tools/call":
        threading.Thread(target=handle_call, args=(request_id, params), daemon=True).start()
        return None
    return error(METHOD_NOT_FOUND, "Method not found")


def serve():
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "method" not in message:  # the client's answer to one of our requests
            with PENDING_LOCK:
                waiting = PENDING.pop(message.get("id"), None)
            if waiting is not None:
                waiting.put(("error", message["error"]) if "error" in message else ("result", message.get("result")))
        elif "id" in message:
            handle_request(message)
        elif message["method"] == "notifications/cancelled":
            request_id = (message.get("params") or {}).get("requestId")
            log_event("cancelled", request_id=request_id)
            CANCELLED.setdefault(request_id, threading.Event()).set()


def main(argv):
    global LOG_FILE, ONLY_2026
    args = list(argv)
    tag = None
    while args:
        arg = args.pop(0)
        if arg == "--tag":
            tag = args.pop(0)
        elif arg == "--log":
            LOG_FILE = args.pop(0)
        elif arg == "--only-2026":
            ONLY_2026 = True
        else:
            sys.exit(f"passthrough_server: unknown argument {arg!r}")
    if not tag:
        sys.exit("passthrough_server: --tag is required")
    log_event("start")
    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
