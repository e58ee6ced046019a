"""Benchmark row 10: the context an agent pays for tool definitions, on six real MCP servers.

Up front (what a client loads without the gateway): every tool definition of
    @modelcontextprotocol/server-everything, -filesystem, -memory   (npm)
    mcp-server-time, mcp-server-fetch, mcp-server-git               (PyPI)
as each server lists them. Through the gateway: its own tools/list, plus what one agent pays
to find and call one tool, in two ways: list_servers + get_server_tools for one server, or one
search (get_server_tools with a query). Characters of the JSON the model reads, and tokens
estimated as characters / 4.

The servers are installed on first use into ~/.cache/agent-mcp-gateway/benchmark-real/ (npm
--prefix, and a virtualenv for the PyPI ones), at pinned versions; the default test suite never
needs them. Without npm or a registry the row says "skipped: <reason>".

Standalone:  .venv/bin/python tests/benchmark_context.py
Imported:    from benchmark_context import measure_context; found = measure_context(workdir)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, when run as a script

import harness  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-mcp-gateway" / "benchmark-real"
NPM_PACKAGES = {
    "everything": ("@modelcontextprotocol/server-everything", "2026.8.31"),
    "filesystem": ("@modelcontextprotocol/server-filesystem", "2026.8.31"),
    "memory": ("@modelcontextprotocol/server-memory", "2026.8.31"),
}
PYPI_PACKAGES = {
    "time": ("mcp-server-time", "2026.10.19"),
    "fetch": ("mcp-server-fetch", "2026.10.24"),
    "git": ("mcp-server-git", "2026.10.19"),
}
ONE_SERVER = "filesystem"  # the server whose tools the agent asks for
QUERY = "read a text file"  # what the agent searches for
INSTALL_TIMEOUT_S = 300
RULES = {"agents": {"default": {"allow": {"servers": ["*"]}}}}


class Skipped(Exception):
    """The servers cannot be installed here; the reason is the message."""


def _run(argv: list[str], what: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Skipped(f"{what} took longer than {INSTALL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise Skipped(f"{what} failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:120]}")


def install() -> tuple[str, Path]:
    """(node, the virtualenv's bin folder), installing what is missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise Skipped("node or npm is not installed")
    modules = CACHE / "node" / "node_modules"
    if not all((modules / name / "package.json").exists() and
               json.loads((modules / name / "package.json").read_text())["version"] == version
               for name, version in NPM_PACKAGES.values()):
        CACHE.mkdir(parents=True, exist_ok=True)
        _run([npm, "install", "--prefix", str(CACHE / "node"), "--no-audit", "--no-fund", "--loglevel=error",
              *[f"{name}@{version}" for name, version in NPM_PACKAGES.values()]], "npm install")
    bin_dir = CACHE / "venv" / "bin"
    if not all((bin_dir / name).exists() for name, _ in PYPI_PACKAGES.values()):
        if not (bin_dir / "python").exists():
            _run([sys.executable, "-m", "venv", str(CACHE / "venv")], "python -m venv")
        _run([str(bin_dir / "pip"), "install", "-q", *[f"{name}=={version}" for name, version in PYPI_PACKAGES.values()]],
             "pip install")
    return node, bin_dir


def server_entries(node: str, bin_dir: Path, workdir: Path) -> dict[str, dict]:
    """`.mcp.json` entries of the six servers, each confined to `workdir`."""
    files, repo = workdir / "files", workdir / "repo"
    files.mkdir(exist_ok=True)
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q", str(repo)], check=True, timeout=30)

    def npm_entry(key: str, *args: str, **extra) -> dict:
        name = NPM_PACKAGES[key][0]
        return {"command": node, "args": [str(CACHE / "node" / "node_modules" / name / "dist" / "index.js"), *args],
                "description": f"{name} {NPM_PACKAGES[key][1]}", **extra}

    def pypi_entry(key: str, *args: str) -> dict:
        name, version = PYPI_PACKAGES[key]
        return {"command": str(bin_dir / name), "args": list(args), "description": f"{name} {version}"}

    return {
        "everything": npm_entry("everything", "stdio"),
        "filesystem": npm_entry("filesystem", str(files)),
        "memory": npm_entry("memory", env={"MEMORY_FILE_PATH": str(workdir / "memory.jsonl")}),
        "time": pypi_entry("time"),
        "fetch": pypi_entry("fetch"),
        "git": pypi_entry("git", "--repository", str(repo)),
    }


def compact(value) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def upfront(entries: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """Per server: (tools, characters of their definitions) as a client loads them directly."""
    found = {}
    for name, entry in entries.items():
        with harness.McpClient(entry["command"], entry["args"], env={**harness.gateway_env(), **entry.get("env", {})}) as client:
            tools = [tool.model_dump(by_alias=True, exclude_none=True) for tool in client.list_tools(timeout=60)]
        found[name] = (len(tools), compact(tools))
    return found


def through_gateway(entries: dict[str, dict], workdir: Path) -> dict[str, int]:
    """Characters the agent reads through the gateway: tools/list, and each step of finding a tool."""
    config = harness.ConfigDir(Path(tempfile.mkdtemp(dir=workdir)))
    config.write(entries, RULES)
    with harness.RawGateway(config.mcp_config, config.rules, "--audit-log", str(config.path("audit.jsonl")),
                            env=harness.gateway_env({"HOME": str(workdir)})) as raw:
        raw.initialize()

        def text_of(tool: str, arguments: dict) -> int:
            answer = raw.request("tools/call", {"name": tool, "arguments": arguments}, timeout=120)
            result = answer["result"]
            if result.get("isError"):
                raise RuntimeError(f"{tool} failed: {result['content'][0]['text'][:200]}")
            return sum(len(block["text"]) for block in result["content"] if block["type"] == "text")

        sizes = {"tools_list": compact(raw.request("tools/list", {})["result"])}
        sizes["list_servers"] = text_of("list_servers", {})
        sizes["get_server_tools"] = text_of("get_server_tools", {"server": ONE_SERVER})
        sizes["search"] = text_of("get_server_tools", {"query": QUERY})
    return sizes


def measure_context(workdir: Path) -> dict:
    node, bin_dir = install()
    entries = server_entries(node, bin_dir, workdir)
    direct = upfront(entries)
    gateway = through_gateway(entries, workdir)
    return {"servers": direct, "tools": sum(n for n, _ in direct.values()),
            "upfront_chars": sum(c for _, c in direct.values()), **gateway}


def tokens(chars: int) -> str:
    return f"{round(chars / 4):,} tokens"


def rows(found: dict) -> list[tuple[str, str, str, str]]:
    """(what, value, against, ratio) for benchmark.py's table."""
    upfront_chars = found["upfront_chars"]
    by_server = found["tools_list"] + found["list_servers"] + found["get_server_tools"]
    by_search = found["tools_list"] + found["search"]
    against = f"{tokens(upfront_chars)} ({found['tools']} definitions up front)"

    def ratio(chars: int) -> str:
        return f"{chars / upfront_chars:.2f} ({upfront_chars / chars:.1f}× less)"

    return [
        (f"10. context for tools, 6 real servers ({found['tools']} tools): all definitions loaded up front",
         tokens(upfront_chars), f"{upfront_chars:,} characters", ""),
        ("10. … gateway: its tools/list alone (an agent that calls no tool)", tokens(found["tools_list"]), against,
         ratio(found["tools_list"])),
        (f"10. … gateway: tools/list + list_servers + get_server_tools({ONE_SERVER})", tokens(by_server), against,
         ratio(by_server)),
        (f"10. … gateway: tools/list + one search (query {QUERY!r})", tokens(by_search), against, ratio(by_search)),
    ]


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-bench-context-") as workdir:
        try:
            found = measure_context(Path(workdir))
        except Skipped as exc:
            print(f"skipped: {exc}")
            return 0
    print(json.dumps(found, indent=2))
    for row in rows(found):
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
