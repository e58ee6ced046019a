"""An entry's `headersHelper`: its JSON object of headers is merged over `headers` when a
session opens; a failing or slow helper is SERVER_UNAVAILABLE naming its exit status or the
time-out, never its output, and its output is never logged."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Iterator

import pytest

import harness
from gateway_lib.errors import SERVER_UNAVAILABLE, ServerUnavailable
from gateway_lib.headers_helper import run_headers_helper
from oauth_harness import ALLOW_ALL, error_of

MARKER = "helper-output-marker-91c2"


@contextlib.contextmanager
def header_server(tag: str) -> Iterator[str]:
    """tests/servers/downstream_http.py (its `header` tool returns one request header)."""
    port = harness.free_port()
    process = subprocess.Popen(
        [sys.executable, str(harness.SERVERS_DIR / "downstream_http.py"), "--port", str(port), "--tag", tag],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        harness.wait_for_port(port, 20, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.kill()
        process.wait(10)


def header_of(gateway: harness.Gateway, name: str):
    return gateway.call_tool("execute_tool", {"server": "api", "tool": "header", "args": {"name": name}})


def test_the_helpers_headers_are_merged_over_the_static_ones_with_the_entrys_env(tag, config_dir):
    helper = 'printf \'{"x-token": "%s", "x-extra": "from-helper"}\' "$HELPER_VALUE"'
    with header_server(tag) as url:
        config_dir.write({"api": harness.http_server(url, headers={"X-Token": "static", "X-Kept": "kept"},
                                                     headersHelper=helper, env={"HELPER_VALUE": "dynamic"})},
                         ALLOW_ALL)
        with config_dir.gateway() as gateway:
            token, extra, kept = (header_of(gateway, name) for name in ("x-token", "x-extra", "x-kept"))
    assert [harness.result_text(result) for result in (token, extra, kept)] == ["dynamic", "from-helper", "kept"]


def test_a_failing_helper_is_server_unavailable_naming_its_exit_status_never_its_output(tag, config_dir):
    helper = f"echo '{MARKER}'; echo '{MARKER}' >&2; exit 7"
    with header_server(tag) as url:
        config_dir.write({"api": harness.http_server(url, headersHelper=helper)}, ALLOW_ALL)
        gateway = config_dir.gateway("--log-level", "DEBUG")
        with gateway:
            error = error_of(header_of(gateway, "x-token"))
        stderr = gateway.stderr_text()
    assert error["code"] == SERVER_UNAVAILABLE and "exit status 7" in error["message"]
    assert MARKER not in error["message"] and MARKER not in stderr


def test_a_helper_that_prints_no_json_object_is_server_unavailable_without_its_output(tag, config_dir):
    with header_server(tag) as url:
        config_dir.write({"api": harness.http_server(url, headersHelper=f"echo '[\"{MARKER}\"]'")}, ALLOW_ALL)
        with config_dir.gateway() as gateway:
            error = error_of(header_of(gateway, "x-token"))
    assert error["code"] == SERVER_UNAVAILABLE and "not an object" in error["message"]
    assert MARKER not in error["message"]


def test_a_slow_helper_is_stopped_at_its_bound_with_its_children():
    with pytest.raises(ServerUnavailable) as raised:
        run_headers_helper("api", f"sleep 30 & echo '{MARKER}'; wait", {"PATH": "/usr/bin:/bin"}, timeout_s=0.5)
    assert "timed out after 0.5 s" in raised.value.message and MARKER not in raised.value.message


def test_the_helper_runs_in_the_shell_and_its_object_becomes_the_headers():
    headers = run_headers_helper("api", 'echo "{\\"a\\": \\"$X\\"}"', {"PATH": "/usr/bin:/bin", "X": "1"})
    assert headers == {"a": "1"}


@pytest.mark.parametrize("output", ['{"bad name": "v"}', '{"x": 1}', '{"x": "line\\nbreak"}'])
def test_invalid_header_names_or_values_are_refused_by_name_only(output):
    with pytest.raises(ServerUnavailable) as raised:
        run_headers_helper("api", f"printf '%s' '{output}'", {"PATH": "/usr/bin:/bin"})
    assert "invalid headers" in raised.value.message and "line" not in raised.value.message
