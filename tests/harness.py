"""What every end-to-end test uses to start the gateway and its downstream servers.

Two ways to talk to an MCP stdio server:

    Gateway / McpClient   the official SDK client (`stdio_client` + `ClientSession`) running in
                          one background thread with its own asyncio loop; tests call plain
                          synchronous methods, each with a bounded wait.
    RawGateway / RawProcess
                          bare pipes and a reader thread, for tests about the wire itself:
                          malformed input, ids, batches, and "every stdout line is JSON-RPC".

Plus the small tools around them: free ports, /proc scans for tagged processes, config
directories, and the entries that launch the test servers in tests/servers/.

Every wait here has a limit. Polls (ports, /proc) go through `wait_until`, the one place
that pauses between attempts; everything else waits on a queue, a future or a thread join.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mcp_types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = ROOT / "gateway.py"
SERVERS_DIR = ROOT / "tests" / "servers"
FAULT_SERVER = SERVERS_DIR / "fault_server.py"
SDK_STDIO_SERVER = SERVERS_DIR / "sdk_stdio_server.py"
SDK_HTTP_SERVER = SERVERS_DIR / "sdk_http_server.py"
BAD_HTTP_SERVER = SERVERS_DIR / "bad_http_server.py"
LISTED_TOOLS_SERVER = SERVERS_DIR / "listed_tools_server.py"

MCP_CONFIG_NAME = ".mcp.json"
RULES_NAME = ".mcp-gateway-rules.json"

LATEST_PROTOCOL_VERSION = "2025-11-25"

# Extra time on top of a call's own timeout before the harness gives up on the SDK: the SDK
# answers its own timeout with MCPError(-32001), and that should be what a test sees.
_GRACE_SECONDS = 5.0
_POLL_INTERVAL = 0.02


# ---------------------------------------------------------------------------- polling


def wait_until(predicate: Callable[[], Any], timeout: float) -> Any:
    """Calls `predicate` until it returns something truthy or `timeout` runs out.

    Returns the last value either way; the caller decides what a falsy one means.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(_POLL_INTERVAL)


# ---------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10, process: subprocess.Popen | None = None) -> None:
    """Returns once 127.0.0.1:`port` accepts a connection; raises TimeoutError otherwise.

    With `process`, fails at once if that process exits first, instead of waiting it out.
    """

    def accepting() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Process {process.args!r} exited with {process.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    if not wait_until(accepting, timeout):
        raise TimeoutError(f"Nothing accepted connections on port {port} within {timeout} s")


# ---------------------------------------------------------------------------- tagged processes


def _read_proc(pid: str, name: str) -> bytes:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as handle:
            return handle.read()
    except OSError:  # the process ended while we looked
        return b""


def tagged_pids(tag: str) -> list[int]:
    """Pids of live processes with `tag` in one of their arguments (zombies have none)."""
    needle = tag.encode()
    own = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        args = _read_proc(entry, "cmdline").split(b"\0")
        if any(needle in arg for arg in args):
            found.append(int(entry))
    return sorted(found)


def _wait_none_left(find: Callable[[], list[int]], timeout: float) -> list[int]:
    """Waits until `find()` finds no process; returns the survivors (empty is good)."""
    survivors: list[int] = []

    def none_left() -> bool:
        survivors[:] = find()
        return not survivors

    wait_until(none_left, timeout)
    return survivors


def wait_no_tagged(tag: str, timeout: float = 5.0) -> list[int]:
    """Waits for every tagged process to end; returns the survivors (empty is good)."""
    return _wait_none_left(lambda: tagged_pids(tag), timeout)


def kill_tagged(tag: str) -> list[int]:
    """SIGKILLs every tagged process; returns the pids it signalled."""
    pids = tagged_pids(tag)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _parent_pids() -> dict[int, int]:
    """pid -> ppid of every live process (zombies excluded: they are already dead)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_proc(entry, "stat")
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 2 and fields[0] != b"Z":
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Live processes whose parent chain leads to `pid` (children, grandchildren, ...).

    A grandchild whose parent died is re-parented (to init or a subreaper) and drops
    out of this walk; `tagged_pids` still finds it by its tag.
    """
    parents = _parent_pids()
    found = []
    for candidate in parents:
        ancestor, hops = parents.get(candidate), 0
        while ancestor is not None and ancestor > 1 and hops < 64:
            if ancestor == pid:
                found.append(candidate)
                break
            ancestor, hops = parents.get(ancestor), hops + 1
    return sorted(found)


def wait_no_descendants(pid: int, timeout: float = 10.0) -> list[int]:
    """Waits for every descendant of `pid` to end; returns the survivors (empty is good)."""
    return _wait_none_left(lambda: descendants(pid), timeout)


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (VmRSS in /proc/<pid>/status)."""
    for line in _read_proc(str(pid), "status").splitlines():
        if line.startswith(b"VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ProcessLookupError(f"No VmRSS for pid {pid}: the process is gone")


def kill_process_group(pid: int) -> None:
    """SIGKILLs the process group `pid` belongs to, as a supervisor would on shutdown."""
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def _child_pid(argv: list[str]) -> int | None:
    """The pid of our direct child running exactly `argv`, when there is exactly one."""
    own = os.getpid()
    wanted = [arg.encode() for arg in argv]
    matches = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_proc(entry, "stat")
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 2 or int(fields[1]) != own:
            continue
        if _read_proc(entry, "cmdline").split(b"\0")[:-1] == wanted:
            matches.append(int(entry))
    return matches[0] if len(matches) == 1 else None


# ---------------------------------------------------------------------------- files and configs


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Writes `obj` as JSON in one rename, so a watcher never sees half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_log(path: str | os.PathLike) -> list[dict]:
    """The events a fault server wrote with `--log`; empty if none were written."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def count_events(path: str | os.PathLike, event: str, **match: Any) -> int:
    """How many logged events are `event` and carry every `match` field, e.g. tool="echo"."""
    return sum(
        1
        for entry in read_log(path)
        if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items())
    )


def fault_server(tag: str, *extra_args: str, log: str | os.PathLike | None = None, **entry: Any) -> dict:
    """A `.mcp.json` server entry that launches tests/servers/fault_server.py.

    `extra_args` go after the tag (e.g. "--mode", "banner"); `entry` adds keys such as
    env= or description=.
    """
    args = [str(FAULT_SERVER), "--tag", tag]
    if log is not None:
        args += ["--log", str(log)]
    return {"command": sys.executable, "args": [*args, *extra_args], **entry}


def sdk_stdio_server(tag: str, **entry: Any) -> dict:
    """A `.mcp.json` server entry that launches tests/servers/sdk_stdio_server.py."""
    return {"command": sys.executable, "args": [str(SDK_STDIO_SERVER), "--tag", tag], **entry}


def listed_tools_server(config_dir: ConfigDir, tag: str, tools: list[dict], log: str | os.PathLike | None = None,
                        **entry: Any) -> dict:
    """A `.mcp.json` entry for tests/servers/listed_tools_server.py, listing `tools` as given
    (written to a new file in `config_dir`)."""
    tools_file = config_dir.path(f"tools-{len(list(config_dir.root.glob('tools-*.json')))}.json")
    tools_file.write_text(json.dumps(tools), encoding="utf-8")
    args = [str(LISTED_TOOLS_SERVER), "--tag", tag, "--tools", str(tools_file)]
    if log is not None:
        args += ["--log", str(log)]
    return {"command": sys.executable, "args": args, **entry}


def execute_message(request_id: Any, server: str, tool: str, args: Any, agent_id: str = "dev", **extra: Any) -> dict:
    """A whole tools/call request for execute_tool, for RawGateway.send."""
    arguments = {"agent_id": agent_id, "server": server, "tool": tool, "args": args, **extra}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "execute_tool", "arguments": arguments}}


def raw_error_of(response: dict) -> dict:
    """The gateway error of a raw tools/call response that is a tool error."""
    result = response["result"]
    assert result["isError"], result
    return result["structuredContent"]["error"]


def http_server(url: str, **entry: Any) -> dict:
    """A `.mcp.json` entry for a streamable-HTTP server."""
    return {"type": "http", "url": url, **entry}


@dataclass(frozen=True)
class UserDirs:
    """Where a gateway under test may write user files; conftest points these at tmp dirs."""

    home: Path
    cache: Path
    config: Path


# Set per test by the autouse `user_dirs` fixture in conftest.py; None outside pytest.
USER_DIRS: UserDirs | None = None


def user_dirs_env(root: str | os.PathLike) -> dict[str, str]:
    """HOME, XDG_CACHE_HOME and XDG_CONFIG_HOME as new folders under `root`: for a gateway
    that outlives one test (the per-test USER_DIRS are not set yet when it starts)."""
    env = {}
    for variable, name in (("HOME", "home"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "xdg-config")):
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        env[variable] = str(folder)
    return env


@dataclass(frozen=True)
class SharedDir:
    """What a gateway shared by the tests of one module starts from (conftest's `shared_dir`):
    its ConfigDir, the tag of its servers, and `env` with user folders of its own."""

    config_dir: ConfigDir
    tag: str
    env: dict[str, str]


def gateway_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a gateway under test: nothing from the developer's shell
    but PATH, so no GATEWAY_* variable leaks in; user paths point at the test's tmp dirs."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1"}
    # No warm spare sessions unless a test asks (test_spares.py does): most tests count the
    # processes a call starts, and a spare is one more. An empty value means the default.
    env["GATEWAY_INIT_STRATEGY"] = "off"
    if USER_DIRS is not None:
        env["HOME"] = str(USER_DIRS.home)
        env["XDG_CACHE_HOME"] = str(USER_DIRS.cache)
        env["XDG_CONFIG_HOME"] = str(USER_DIRS.config)
    else:
        env["HOME"] = os.environ.get("HOME", "/")
    env.update(extra or {})
    return env


def gateway_argv(mcp_config_path: str | os.PathLike, rules_path: str | os.PathLike, *extra_args: str) -> list[str]:
    return [str(GATEWAY), "--mcp-config", str(mcp_config_path), "--rules", str(rules_path), *extra_args]


class ConfigDir:
    """A directory holding `.mcp.json` and `.mcp-gateway-rules.json` for one test."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.mcp_config = self.root / MCP_CONFIG_NAME
        self.rules = self.root / RULES_NAME

    def write_servers(self, servers: dict[str, dict]) -> Path:
        """Writes `{"mcpServers": servers}` to .mcp.json."""
        return write_json(self.mcp_config, {"mcpServers": servers})

    def write_rules(self, rules: dict) -> Path:
        """Writes `rules` to .mcp-gateway-rules.json as given."""
        return write_json(self.rules, rules)

    def write(self, servers: dict[str, dict], rules: dict) -> ConfigDir:
        self.write_servers(servers)
        self.write_rules(rules)
        return self

    def path(self, name: str) -> Path:
        """A path inside the directory, for logs and extra files."""
        return self.root / name

    def gateway(self, *extra_args: str, env: dict[str, str] | None = None) -> Gateway:
        """A Gateway over these two files (not started yet)."""
        return Gateway(self.mcp_config, self.rules, *extra_args, env=env)

    def raw_gateway(self, *extra_args: str, env: dict[str, str] | None = None) -> RawGateway:
        """A RawGateway over these two files, already running."""
        return RawGateway(self.mcp_config, self.rules, *extra_args, env=env)


# ---------------------------------------------------------------------------- SDK client


class ToolCallError(AssertionError):
    """A tool answered with isError where the test expected a result."""

    def __init__(self, name: str, result: mcp_types.CallToolResult):
        super().__init__(f"Tool {name!r} answered with isError: {result_text(result)!r}")
        self.result = result


def result_text(result: mcp_types.CallToolResult) -> str:
    """The text blocks of a tool result, joined by newlines."""
    return "\n".join(block.text for block in result.content if isinstance(block, mcp_types.TextContent))


class SessionClient:
    """One MCP client session driven from synchronous code.

    A named thread runs an asyncio loop whose main task enters the transport and the
    `ClientSession` and holds them open until `close()`: anyio needs both entered and left
    in the same task. Each request runs as its own task on that loop and the calling
    thread waits on its future with a limit. Subclasses say which transport to open.
    """

    thread_name = "harness-mcp-client"

    def __init__(self) -> None:
        self.initialize_result: mcp_types.InitializeResult | None = None
        self.failure: BaseException | None = None  # what ended the session task, if anything
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._session: ClientSession | None = None
        self._opened = threading.Event()  # set once the session is open or failed to open
        self._thread: threading.Thread | None = None
        # Extra ClientSession arguments: sampling/elicitation/roots/logging callbacks and the like.
        self.session_kwargs: dict[str, Any] = {}

    # subclasses

    def _transport(self) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    def _after_close(self) -> None:
        pass

    # lifecycle

    def start(self, timeout: float = 30) -> mcp_types.InitializeResult:
        """Opens the transport and runs the initialize handshake."""
        if self._thread is not None:
            raise RuntimeError("The client was already started")
        self._thread = threading.Thread(target=self._thread_main, name=self.thread_name, daemon=True)
        self._thread.start()
        try:
            if not self._opened.wait(timeout):
                raise TimeoutError(f"The transport did not open within {timeout} s")
            if self._session is None:
                raise RuntimeError("The transport failed to open") from self.failure
            self.initialize_result = self._run(self._session.initialize(), timeout)
        except BaseException:
            self.close(check=False)
            raise
        return self.initialize_result

    def close(self, timeout: float = 10, check: bool = True) -> None:
        """Leaves the session and the transport; for stdio that ends the child process.

        Raises what ended the session task, when `check` and something did.
        """
        thread = self._thread
        if thread is not None:
            loop, stop = self._loop, self._stop
            if loop is not None and stop is not None:
                with contextlib.suppress(RuntimeError):  # the loop already finished
                    loop.call_soon_threadsafe(stop.set)
            thread.join(timeout)
            if thread.is_alive():
                raise TimeoutError(f"The client thread did not stop within {timeout} s")
        self._after_close()
        if check and self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        # Never mask the test's own exception with a teardown one.
        self.close(check=exc_info[0] is None)

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self._transport() as (read_stream, write_stream):
                async with ClientSession(read_stream, write_stream, **self.session_kwargs) as session:
                    self._session = session
                    self._opened.set()
                    await self._stop.wait()
        except Exception as exc:  # reported by close(); the thread must end either way
            self.failure = exc
        finally:
            self._session = None
            self._opened.set()

    # requests

    def _run(self, coro, timeout: float) -> Any:
        """Runs `coro` on the session loop and waits at most `timeout` seconds for it."""
        loop = self._loop
        if loop is None or self._session is None or loop.is_closed():
            coro.close()
            raise RuntimeError("The session is not open") from self.failure
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"No answer within {timeout} s") from None

    @property
    def session(self) -> ClientSession:
        if self._session is None:
            raise RuntimeError("The session is not open")
        return self._session

    def list_tools(self, timeout: float = 30) -> list[mcp_types.Tool]:
        """Every tool, following pagination cursors."""

        async def all_pages() -> list[mcp_types.Tool]:
            tools: list[mcp_types.Tool] = []
            params = None
            for _ in range(1000):  # a bound, in case a server hands out cursors forever
                page = await self.session.list_tools(params=params)
                tools.extend(page.tools)
                if not page.next_cursor:
                    return tools
                params = mcp_types.PaginatedRequestParams(cursor=page.next_cursor)
            raise AssertionError("More than 1000 pages of tools")

        return self._run(all_pages(), timeout)

    def call_tool(self, name: str, arguments: dict | None = None, timeout: float = 30) -> mcp_types.CallToolResult:
        """Calls a tool; the SDK itself enforces `timeout` (MCPError -32001 when it runs out)."""
        coro = self.session.call_tool(name, arguments or {}, read_timeout_seconds=timeout)
        return self._run(coro, timeout + _GRACE_SECONDS)

    def call_json(self, name: str, arguments: dict | None = None, timeout: float = 30) -> dict:
        """Calls a tool and returns its structuredContent; raises ToolCallError on isError."""
        result = self.call_tool(name, arguments, timeout)
        if result.is_error:
            raise ToolCallError(name, result)
        if result.structured_content is None:
            raise AssertionError(f"Tool {name!r} returned no structuredContent: {result_text(result)!r}")
        return result.structured_content

    def ping(self, timeout: float = 10) -> None:
        self._run(self.session.send_ping(), timeout)


class McpClient(SessionClient):
    """An SDK client session with a stdio server started as `command *args`.

    The child gets the SDK's default environment (HOME, LOGNAME, PATH, SHELL, TERM, USER)
    overlaid with `env`. Its stderr goes to a temporary file, see `stderr_text()`.
    """

    def __init__(self, command: str, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None):
        super().__init__()
        self.command = command
        self.args = [str(arg) for arg in args]
        self.env = dict(env or {})
        self.cwd = cwd
        self.pid: int | None = None  # the child's pid once started, when it could be found
        fd, self._stderr_path = tempfile.mkstemp(prefix="harness-stderr-", suffix=".log")
        self._stderr = os.fdopen(fd, "w+", encoding="utf-8")
        self._stderr_final: str | None = None

    def _transport(self):
        params = StdioServerParameters(command=self.command, args=self.args, env=self.env, cwd=self.cwd)
        return stdio_client(params, errlog=self._stderr)

    def start(self, timeout: float = 30) -> mcp_types.InitializeResult:
        result = super().start(timeout)
        self.pid = _child_pid([self.command, *self.args])
        return result

    def stderr_text(self) -> str:
        """Everything the child wrote to stderr so far (or in all, after close)."""
        if self._stderr_final is not None:
            return self._stderr_final
        return Path(self._stderr_path).read_text(encoding="utf-8", errors="replace")

    def _after_close(self) -> None:
        if self._stderr_final is None:
            self._stderr_final = self.stderr_text()
            self._stderr.close()
            os.unlink(self._stderr_path)


class HttpMcpClient(SessionClient):
    """An SDK client session with a streamable-HTTP server at `url`."""

    thread_name = "harness-mcp-http-client"

    def __init__(self, url: str):
        super().__init__()
        self.url = url

    def _transport(self):
        return streamable_http_client(self.url)


class Gateway(McpClient):
    """The gateway under test, driven by the official SDK client.

    `env` is added to `gateway_env()`, which holds nothing from the developer's shell but
    PATH. Use as a context manager, or call `start()` and `close()`.
    """

    thread_name = "harness-gateway-client"

    def __init__(
        self,
        mcp_config_path: str | os.PathLike,
        rules_path: str | os.PathLike,
        *extra_args: str,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ):
        super().__init__(sys.executable, gateway_argv(mcp_config_path, rules_path, *extra_args), gateway_env(env), cwd)


# ---------------------------------------------------------------------------- raw pipes


class StdoutClosedError(AssertionError):
    """The process closed its stdout while a test waited for a message."""


_EOF = object()


class RawProcess:
    """A stdio process on bare pipes: write bytes, read parsed lines, see every byte.

    A named reader thread keeps every stdout byte and queues each line; stderr goes to a
    temporary file. The process starts at construction. With `strict` (the default) a
    stdout line that is not JSON fails the test; without it such lines are skipped by
    `read_message` (they stay in `all_stdout_bytes()`).
    """

    def __init__(
        self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None, strict: bool = True
    ):
        self.strict = strict
        fd, self._stderr_path = tempfile.mkstemp(prefix="harness-raw-stderr-", suffix=".log")
        self._stderr = os.fdopen(fd, "w+b")
        self._stderr_final: str | None = None
        self._lines: queue.Queue = queue.Queue()
        self._stdout = bytearray()
        self._stdout_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.other_messages: list[dict] = []  # messages request() read past while looking for its id
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._read_stdout, name="harness-raw-stdout-reader", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        stdout = self.process.stdout
        for line in iter(stdout.readline, b""):
            with self._stdout_lock:
                self._stdout += line
            self._lines.put(line)
        self._lines.put(_EOF)

    # writing

    def send_bytes(self, data: bytes) -> None:
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def send(self, obj: Any) -> None:
        """Writes `obj` as one JSON line."""
        self.send_bytes(json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n")

    def notify(self, method: str, params: dict | None = None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)

    # reading

    def read_line(self, timeout: float = 5) -> bytes:
        """The next raw stdout line, newline included."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"No line on stdout within {timeout} s") from None
        if line is _EOF:
            self._lines.put(_EOF)  # later reads see the end too
            raise StdoutClosedError(f"stdout closed; stderr was: {self.stderr_text()[-2000:]!r}")
        return line

    def read_message(self, timeout: float = 5) -> dict:
        """The next stdout line parsed as JSON; see `strict` for lines that are not JSON."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.read_line(max(deadline - time.monotonic(), 0))
            try:
                return json.loads(line)
            except ValueError:
                if self.strict:
                    raise AssertionError(f"stdout line is not JSON: {line[:200]!r}") from None

    def request(self, method: str, params: dict | None = None, id: Any = None, timeout: float = 10) -> dict:
        """Sends a request and returns the response carrying its id (compared exactly:
        "1" is not 1). Other messages read meanwhile go to `other_messages`."""
        request_id = next(self._ids) if id is None else id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        return self.response_for(request_id, timeout)

    def response_for(self, request_id: Any, timeout: float = 10) -> dict:
        """Reads until the response with exactly `request_id` arrives."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"No response with id {request_id!r} within {timeout} s")
            message = self.read_message(remaining)
            if _same_id(message, request_id):
                return message
            self.other_messages.append(message)

    def initialize(self, version: str = LATEST_PROTOCOL_VERSION, timeout: float = 30, announce: bool = True) -> dict:
        """The handshake: initialize, then notifications/initialized; returns the result.

        With `announce=False` the notification is not sent, so the gateway never starts what
        waits for it (the background SDK import, the config watcher, spares): for wire-level
        tests of the gateway's own answers, where that import would cost a second of CPU and
        hold up the gateway's exit. A downstream call still works (the SDK loads on demand).
        """
        params = {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "harness-raw-client", "version": "0"},
        }
        response = self.request("initialize", params, id=0, timeout=timeout)
        if "result" not in response:
            raise AssertionError(f"initialize failed: {response!r}")
        if announce:
            self.notify("notifications/initialized")
        return response["result"]

    def all_stdout_bytes(self) -> bytes:
        """Every byte read from stdout so far."""
        with self._stdout_lock:
            return bytes(self._stdout)

    def stderr_text(self) -> str:
        if self._stderr_final is not None:
            return self._stderr_final
        return Path(self._stderr_path).read_text(encoding="utf-8", errors="replace")

    # ending

    def close(self, timeout: float = 10) -> int:
        """Closes stdin, waits for the exit (killing after `timeout`); returns the exit code."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._reader.join(5)
        if self._reader.is_alive():
            # Something the process started still holds the stdout pipe open.
            raise TimeoutError("The stdout reader did not finish: a descendant holds the pipe")
        self.process.stdout.close()
        if self._stderr_final is None:
            self._stderr_final = self.stderr_text()
            self._stderr.close()
            os.unlink(self._stderr_path)
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def protocol_problems(stdout: bytes) -> list[str]:
    """What is wrong with a stdio server's stdout as a stream of JSON-RPC messages.

    Every line must be valid UTF-8 and JSON: an object (or, for a batch answer, an array
    of objects) with "jsonrpc": "2.0" and either a method, or an id and exactly one of
    result and error. An empty list means the stream is clean.
    """
    problems = []
    if stdout and not stdout.endswith(b"\n"):
        problems.append("stdout does not end with a newline")
    for number, line in enumerate(stdout.splitlines(), 1):
        try:
            value = json.loads(line.decode("utf-8"))
        except ValueError:
            problems.append(f"line {number} is not UTF-8 JSON: {line[:120]!r}")
            continue
        for message in value if isinstance(value, list) and value else [value]:
            problem = _message_problem(message)
            if problem:
                problems.append(f"line {number} {problem}: {line[:120]!r}")
    return problems


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return "is not a JSON-RPC 2.0 object"
    if "method" in message:
        return None if isinstance(message["method"], str) else "has a method that is not a string"
    if ("result" in message) == ("error" in message):
        return "has neither or both of result and error"
    if "id" in message and (isinstance(message["id"], bool) or not isinstance(message["id"], (str, int))):
        return "has an id that is not a string or an integer"
    if "id" not in message and "error" not in message:
        return "is a result without an id"
    if "error" in message:
        error = message["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), int) or not isinstance(error.get("message"), str):
            return "has a malformed error object"
    return None


def _same_id(message: Any, request_id: Any) -> bool:
    if not isinstance(message, dict) or "id" not in message or "method" in message:
        return False
    got = message["id"]
    return type(got) is type(request_id) and got == request_id


class RawGateway(RawProcess):
    """The gateway under test on bare pipes; `env` is added to `gateway_env()`."""

    def __init__(
        self,
        mcp_config_path: str | os.PathLike,
        rules_path: str | os.PathLike,
        *extra_args: str,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ):
        argv = [sys.executable, *gateway_argv(mcp_config_path, rules_path, *extra_args)]
        super().__init__(argv, gateway_env(env), cwd)


# ---------------------------------------------------------------------------- helper processes


@contextlib.contextmanager
def http_process(script: Path, tag: str, *extra_args: str, timeout: float = 20) -> Iterator[tuple[str, subprocess.Popen]]:
    """Runs one of the HTTP test servers on a free port until the block ends.

    Yields (url of /mcp, process). The server is killed and reaped on exit.
    """
    port = free_port()
    argv = [sys.executable, str(script), "--port", str(port), "--tag", tag, *extra_args]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout, process)
        yield f"http://127.0.0.1:{port}/mcp", process
    finally:
        process.kill()
        process.wait(5)
