"""A downstream MCP stdio server that misbehaves on request, for end-to-end tests.

Standard library only, so it starts in a few tens of milliseconds. It speaks
newline-delimited JSON-RPC 2.0 on stdin/stdout and handles initialize,
notifications/initialized, ping, tools/list and tools/call; any other request
gets -32601 at once (the SDK 2.x client's `server/discover` probe included).

Usage:
    fault_server.py --tag TAG [--log FILE] [--mode MODE] [--tools-extra NAME]
                    [--tools-file FILE]

--tag TAG          required marker; tests find every process of one test by
                   scanning /proc/*/cmdline for it, grandchildren included.
--log FILE         append one JSON line per event: {"event": "start", "pid": ...}
                   at start, {"event": "call", "method": "tools/list", ...} per
                   listing, {"event": "call", "method": "tools/call",
                   "tool": NAME, ...} per call and {"event": "notification",
                   "method": ..., "request_id": ...} per notification received.
--mode MODE        start behaviour, one of:
                     normal           serve until stdin closes
                     exit-at-once     exit with status 1 before reading anything
                     never-initialize read stdin, answer nothing, exit on EOF
                     banner           write non-JSON lines to stdout at start and
                                      before every answer
                     flood-stderr     write about 1 MB to stderr, then serve
                     close-stdout     close stdout after answering initialize,
                                      then ignore stdin and sleep until killed
                     ignore-sigterm   ignore SIGTERM and keep sleeping after stdin
                                      closes, so only SIGKILL ends it
                     grandchild       spawn a tagged grandchild that ignores stdin
                                      and sleeps forever, then serve
                     setsid-grandchild  the same, but the grandchild leaves the
                                      process group with setsid()
                     bad-utf8         write lines that are not UTF-8 to stdout at
                                      start and before every answer
                     linger           on stdin EOF log "stdin-closed" and keep
                                      running; on SIGTERM log "sigterm" and exit
--fault-tools      also offer `wait_file` (answers once a path exists),
                   `unreadable` (answers with JSON a strict reader refuses; with
                   "hide_id": true its id is nested too, so it matches no request),
                   `held` (its answer is kept back) and `release` (writes every
                   held answer, then its own).
--tools-extra NAME another tool that echoes, to simulate a newly added tool.
--tools-file FILE  more echoing tools, one name a line, read at each start (a
                   missing file adds none): a test adds a tool by writing this
                   file, without changing the server's config entry.

The server is single-threaded: while `sleep` runs, nothing else is read. `held`
keeps calls in flight without blocking it.
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time

SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = "2025-11-25"
MODES = (
    "normal",
    "exit-at-once",
    "never-initialize",
    "banner",
    "flood-stderr",
    "close-stdout",
    "ignore-sigterm",
    "grandchild",
    "setsid-grandchild",
    "bad-utf8",
    "linger",
)

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
PARSE_ERROR = -32700
DELIBERATE_FAILURE = -32050

# A 1x1 RGB PNG and an 8-sample 8 kHz mono WAV, both valid files.
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
WAV_TINY = "UklGRiwAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQgAAACAgICAgICAgA=="
# Checked at import so a bad constant fails loudly instead of sending junk.
base64.b64decode(PNG_1X1, validate=True)
base64.b64decode(WAV_TINY, validate=True)


class ToolFailure(Exception):
    """Raised by a handler to answer with a JSON-RPC error instead of a result."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Options:
    def __init__(self, argv):
        self.tag = None
        self.log = None
        self.mode = "normal"
        self.tools_extra = []
        self.tools_file = None
        self.grandchild = False
        self.fault_tools = False
        args = list(argv)
        while args:
            arg = args.pop(0)
            if arg == "--grandchild":
                self.grandchild = True
            elif arg == "--fault-tools":
                self.fault_tools = True
            elif arg in ("--tag", "--log", "--mode", "--tools-extra", "--tools-file"):
                if not args:
                    fail_usage(f"{arg} needs a value")
                value = args.pop(0)
                if arg == "--tag":
                    self.tag = value
                elif arg == "--log":
                    self.log = value
                elif arg == "--mode":
                    self.mode = value
                elif arg == "--tools-file":
                    self.tools_file = value
                else:
                    self.tools_extra.append(value)
            else:
                fail_usage(f"unknown argument {arg!r}")
        if not self.tag:
            fail_usage("--tag is required")
        if self.mode not in MODES:
            fail_usage(f"unknown mode {self.mode!r}")


def fail_usage(message):
    sys.stderr.write(f"fault_server: {message}\n")
    sys.exit(2)


# ---------------------------------------------------------------- state and I/O

OPTIONS = None
COUNTER = 0
STDOUT_OPEN = True


def log_event(event, **fields):
    if OPTIONS.log is None:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n"
    # One write on an O_APPEND descriptor, so lines from parallel processes never interleave.
    fd = os.open(OPTIONS.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def write_raw(text):
    write_bytes(text.encode("utf-8"))


def write_bytes(data):
    if not STDOUT_OPEN:
        return
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


NOT_UTF8_LINES = b"\xff\xfe banner\n" + "caf\u00e9 in Latin-1\n".encode("latin-1")


def send(message):
    if OPTIONS.mode == "banner":
        write_raw("banner: this line is not JSON-RPC\n")
    if OPTIONS.mode == "bad-utf8":
        write_bytes(NOT_UTF8_LINES)
    if isinstance(message, RawAnswer):
        write_raw(message.text + "\n")
        return
    write_raw(json.dumps(message, separators=(",", ":")) + "\n")


def spawn_grandchild(leave_group=False):
    """Starts a tagged grandchild that never reads stdin, in this process's group unless
    `leave_group` (then it calls setsid() and is in a session and group of its own)."""
    return subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--grandchild", "--tag", OPTIONS.tag],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=leave_group,
    ).pid


def sleep_forever():
    while True:
        signal.pause()


# ---------------------------------------------------------------- tools


def text_result(text):
    return {"content": [{"type": "text", "text": text}], "isError": False}


def schema(properties=None, required=()):
    result = {"type": "object", "properties": properties or {}}
    if required:
        result["required"] = list(required)
    return result


def echo_tool(name, description="Return the given text."):
    definition = {
        "name": name,
        "description": description,
        "inputSchema": schema({"text": {"type": "string"}}, ["text"]),
        "annotations": {"readOnlyHint": True, "idempotentHint": True},
    }
    return definition, lambda args: text_result(args["text"])


def tool_add(args):
    total = args["a"] + args["b"]
    return {
        "content": [{"type": "text", "text": json.dumps({"sum": total})}],
        "structuredContent": {"sum": total},
        "isError": False,
    }


def tool_image(args):
    return {"content": [{"type": "image", "data": PNG_1X1, "mimeType": "image/png"}], "isError": False}


def tool_audio(args):
    return {"content": [{"type": "audio", "data": WAV_TINY, "mimeType": "audio/wav"}], "isError": False}


def tool_resource(args):
    resource = {"uri": "test://fault/resource", "mimeType": "text/plain", "text": "embedded resource text"}
    return {"content": [{"type": "resource", "resource": resource}], "isError": False}


def tool_fail(args):
    return {"content": [{"type": "text", "text": "deliberate tool failure"}], "isError": True}


def tool_sleep(args):
    time.sleep(args["seconds"])
    return text_result(f"slept {args['seconds']}")


def tool_wait_file(args):
    """Answer once the file exists (the test creates it when it is ready): a call whose
    end the test controls, without guessing a duration."""
    deadline = time.monotonic() + 60
    while not os.path.exists(args["path"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return text_result("released" if os.path.exists(args["path"]) else "gave up")


def tool_crash(args):
    os._exit(3)


def tool_rpc_error(args):
    raise ToolFailure(args.get("code", DELIBERATE_FAILURE), args.get("message", "deliberate failure"))


class RawAnswer:
    """An answer written as this exact text: JSON that a strict reader may refuse; a
    result, or (`whole_line`) the whole line."""

    def __init__(self, text, whole_line=False):
        self.text = text
        self.whole_line = whole_line


class Held:
    """A result kept back until `release` is called."""

    def __init__(self, result):
        self.result = result


HELD = []  # the answers kept back, in the order the calls came


def tool_held(args):
    return Held(text_result("released"))


def tool_release(args):
    released = len(HELD)
    for response in HELD:
        send(response)
    HELD.clear()
    return text_result(f"released {released}")


def tool_unreadable(args):
    """Answer with a well-formed line that holds what strict JSON readers refuse."""
    if args["kind"] == "deep":
        depth = int(args.get("depth", 5000))
        value = "[" * depth + "]" * depth
    else:  # "surrogate": a lone high surrogate, escaped as JSON allows
        value = '"\\ud800"'
    result = '{"content":[{"type":"text","text":"x"}],"structuredContent":{"v":' + value + '},"isError":false}'
    if args.get("hide_id"):  # an "id" only inside: no reader can tell which request this answers
        return RawAnswer('{"jsonrpc":"2.0","id":[' + value + '],"result":' + result + '}', whole_line=True)
    return RawAnswer(result)


def tool_huge(args):
    return text_result("x" * int(args["size"]))


def tool_counter(args):
    global COUNTER
    COUNTER += 1
    return text_result(str(COUNTER))


def tool_env(args):
    return text_result(os.environ.get(args["name"], "<unset>"))


def tool_spawn_grandchild(args):
    return text_result(str(spawn_grandchild()))


def build_tools(extra_names, fault_tools=False):
    """Returns the tool table: name -> (definition, handler)."""
    no_args = schema()
    tools = {
        "echo": echo_tool("echo"),
        "add": (
            {
                "name": "add",
                "description": "Add two numbers; the result is structured.",
                "inputSchema": schema({"a": {"type": "number"}, "b": {"type": "number"}}, ["a", "b"]),
                "outputSchema": schema({"sum": {"type": "number"}}, ["sum"]),
                "annotations": {"readOnlyHint": True},
            },
            tool_add,
        ),
        "image": ({"name": "image", "description": "Return a 1x1 PNG.", "inputSchema": no_args}, tool_image),
        "audio": ({"name": "audio", "description": "Return a tiny WAV.", "inputSchema": no_args}, tool_audio),
        "resource": (
            {"name": "resource", "description": "Return an embedded resource.", "inputSchema": no_args},
            tool_resource,
        ),
        "fail": ({"name": "fail", "description": "Answer with isError true.", "inputSchema": no_args}, tool_fail),
        "sleep": (
            {
                "name": "sleep",
                "description": "Sleep for the given seconds, then answer.",
                "inputSchema": schema({"seconds": {"type": "number", "minimum": 0}}, ["seconds"]),
            },
            tool_sleep,
        ),
        "crash": (
            {
                "name": "crash",
                "description": "Exit the process with status 3 in the middle of the call.",
                "inputSchema": no_args,
                "annotations": {"destructiveHint": True},
            },
            tool_crash,
        ),
        "rpc_error": (
            {
                "name": "rpc_error",
                "description": "Answer with a JSON-RPC error: -32050 'deliberate failure' unless given.",
                "inputSchema": schema({"code": {"type": "integer"}, "message": {"type": "string"}}),
            },
            tool_rpc_error,
        ),
        "huge": (
            {
                "name": "huge",
                "description": "Return one text block of the given number of characters.",
                "inputSchema": schema({"size": {"type": "integer", "minimum": 0}}, ["size"]),
            },
            tool_huge,
        ),
        "counter": (
            {"name": "counter", "description": "Increment a per-process counter.", "inputSchema": no_args},
            tool_counter,
        ),
        "env": (
            {
                "name": "env",
                "description": "Return the value of an environment variable, or <unset>.",
                "inputSchema": schema({"name": {"type": "string"}}, ["name"]),
            },
            tool_env,
        ),
        "spawn_grandchild": (
            {
                "name": "spawn_grandchild",
                "description": "Start a tagged grandchild that sleeps forever; answer its pid.",
                "inputSchema": no_args,
            },
            tool_spawn_grandchild,
        ),
    }
    if fault_tools:
        tools.update({
            "wait_file": (
                {
                    "name": "wait_file",
                    "description": "Answer once the given path exists (60 s at most).",
                    "inputSchema": schema({"path": {"type": "string"}}, ["path"]),
                },
                tool_wait_file,
            ),
            "unreadable": (
                {
                    "name": "unreadable",
                    "description": "Answer with JSON nested `depth` deep (kind 'deep') or holding \\ud800 ('surrogate').",
                    "inputSchema": schema({"kind": {"type": "string"}, "depth": {"type": "integer"}}, ["kind"]),
                },
                tool_unreadable,
            ),
            "held": (
                {"name": "held", "description": "Answer only once `release` is called.", "inputSchema": schema()},
                tool_held,
            ),
            "release": (
                {"name": "release", "description": "Answer every held call, then this one.", "inputSchema": schema()},
                tool_release,
            ),
        })
    for odd in ("get*", "a?b", "x[1]", "../up", "with space", *extra_names):
        tools[odd] = echo_tool(odd)
    return tools


TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
}


def argument_problem(definition, args):
    """Returns a sentence describing what is wrong with the arguments, or None."""
    input_schema = definition["inputSchema"]
    for key in input_schema.get("required", ()):
        if key not in args:
            return f"Missing required argument {key!r}"
    for key, value in args.items():
        expected = input_schema["properties"].get(key, {}).get("type")
        if expected and not TYPE_CHECKS[expected](value):
            return f"Argument {key!r} must be of type {expected}"
    return None


# ---------------------------------------------------------------- dispatch


def handle_initialize(params):
    requested = params.get("protocolVersion")
    version = requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION
    return {
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "fault-server", "version": "1.0.0"},
    }


def handle_tools_list(params):
    log_event("call", method="tools/list")
    return {"tools": [definition for definition, _ in TOOLS.values()]}


def handle_tools_call(params):
    name = params.get("name")
    log_event("call", method="tools/call", tool=name)
    if name not in TOOLS:
        raise ToolFailure(INVALID_PARAMS, f"Unknown tool {name!r}")
    definition, handler = TOOLS[name]
    args = params.get("arguments") or {}
    problem = argument_problem(definition, args)
    if problem:
        return {"content": [{"type": "text", "text": problem}], "isError": True}
    return handler(args)


METHODS = {
    "initialize": handle_initialize,
    "ping": lambda params: {},
    "tools/list": handle_tools_list,
    "tools/call": handle_tools_call,
}

TOOLS = {}


def answer(message):
    """Handles one parsed message; returns the response dict, or None for notifications."""
    if not isinstance(message, dict) or "method" not in message:
        return None  # responses from the client and junk without a method get no answer
    if "id" not in message:
        params = message.get("params") if isinstance(message.get("params"), dict) else {}
        log_event("notification", method=message["method"], request_id=params.get("requestId"))
        return None  # notifications/initialized, notifications/cancelled, ...
    request_id = message["id"]
    method = message["method"]
    handler = METHODS.get(method)
    if handler is None:
        return error(request_id, METHOD_NOT_FOUND, f"Method not found: {method}")
    params = message.get("params") or {}
    try:
        result = handler(params)
    except ToolFailure as exc:
        return error(request_id, exc.code, exc.message)
    if isinstance(result, Held):
        HELD.append({"jsonrpc": "2.0", "id": request_id, "result": result.result})
        return None
    if isinstance(result, RawAnswer) and result.whole_line:
        return result
    if isinstance(result, RawAnswer):
        return RawAnswer(f'{{"jsonrpc":"2.0","id":{json.dumps(request_id)},"result":{result.text}}}')
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error(request_id, code, message):
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def serve():
    global STDOUT_OPEN
    mode = OPTIONS.mode
    stdin = sys.stdin.buffer
    for raw in iter(stdin.readline, b""):
        if mode == "never-initialize":
            continue
        line = raw.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except ValueError:
            send({"jsonrpc": "2.0", "id": None, "error": {"code": PARSE_ERROR, "message": "Parse error"}})
            continue
        response = answer(message)
        if response is not None:
            send(response)
        if mode == "close-stdout" and isinstance(message, dict) and message.get("method") == "initialize":
            sys.stdout.flush()
            os.close(1)
            STDOUT_OPEN = False
            sleep_forever()
    if mode == "ignore-sigterm":
        sleep_forever()
    if mode == "linger":
        log_event("stdin-closed")
        sleep_forever()


def on_sigterm(signum, frame):
    log_event("sigterm")
    os._exit(0)


def read_tools_file(path):
    if path is None or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def main(argv):
    global OPTIONS, TOOLS
    OPTIONS = Options(argv)
    if OPTIONS.grandchild:
        sleep_forever()
    TOOLS = build_tools(OPTIONS.tools_extra + read_tools_file(OPTIONS.tools_file), OPTIONS.fault_tools)
    log_event("start", mode=OPTIONS.mode)
    mode = OPTIONS.mode
    if mode == "exit-at-once":
        sys.stderr.write("fault_server: exiting at once as asked\n")
        sys.stderr.flush()
        os._exit(1)
    if mode == "ignore-sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "grandchild":
        spawn_grandchild()
    if mode == "setsid-grandchild":
        spawn_grandchild(leave_group=True)
    if mode == "linger":
        signal.signal(signal.SIGTERM, on_sigterm)
    if mode == "bad-utf8":
        write_bytes(NOT_UTF8_LINES)
    if mode == "flood-stderr":
        chunk = "flood " * 170 + "\n"  # about 1 KB
        for _ in range(1024):
            sys.stderr.write(chunk)
        sys.stderr.flush()
    if mode == "banner":
        write_raw("fault_server banner: starting up\n")
        write_raw("\n")
    serve()


if __name__ == "__main__":
    main(sys.argv[1:])
