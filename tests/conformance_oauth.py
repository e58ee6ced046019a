"""Run the MCP conformance suite's `auth/*` client scenarios against the gateway (opt-in: needs Node 22).

    .venv/bin/python tests/conformance_oauth.py [SCENARIO ...]

Not part of the test suite. The first run installs `node@22` and `@modelcontextprotocol/conformance`
from npm into ~/.cache/agent-mcp-gateway/conformance (prints `skipped: <reason>` without npm).
Each scenario runs tests/conformance_oauth_client.py, a real gateway in front of the suite's
server; one line per scenario says PASS or FAIL, and the exit status is the number that failed
(minus those listed in EXPECTED_FAILURES).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agent-mcp-gateway" / "conformance"
CLIENT = ROOT / "tests" / "conformance_oauth_client.py"
VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25", "extension")
# The SDK's issuer check (RFC 8414 §3.3) refuses this scenario's metadata, rightly.
EXPECTED_FAILURES = {"auth/2025-03-26-oauth-metadata-backcompat"}
SCENARIO_TIMEOUT_MS = 60000


def install() -> Path | None:
    binary = CACHE / "node_modules" / ".bin" / "conformance"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        print("skipped: npm is not installed")
        return None
    done = subprocess.run([npm, "install", "--prefix", str(CACHE), "node@22", "@modelcontextprotocol/conformance"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not binary.exists():
        print(f"skipped: npm install failed ({done.returncode})")
        return None
    return binary


def scenarios(node_env: dict[str, str], binary: Path) -> list[str]:
    listed = subprocess.run(["node", str(binary), "list", "--client"], env=node_env, capture_output=True, text=True,
                            timeout=60)
    found = []
    for name, versions in re.findall(r"- (auth/\S+) \[([^\]]*)\]", listed.stdout + listed.stderr):
        if set(versions.split(",")) & set(VERSIONS) and not name.startswith("auth/cross-app"):
            found.append(name)
    return found


def main(argv: list[str]) -> int:
    binary = install()
    if binary is None:
        return 0
    node_env = {**os.environ, "PATH": f"{CACHE / 'node_modules' / 'node' / 'bin'}:{os.environ.get('PATH', '')}"}
    names = argv or scenarios(node_env, binary)
    failed = 0
    for name in names:
        command = f"{sys.executable} {CLIENT}"
        done = subprocess.run(["node", str(binary), "client", "--command", command, "--scenario", name,
                               "--timeout", str(SCENARIO_TIMEOUT_MS)],
                              env=node_env, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_MS / 1000 + 60)
        passed = done.returncode == 0 and "OVERALL: PASSED" in done.stdout + done.stderr
        note = " (expected: the SDK's issuer check refuses it)" if not passed and name in EXPECTED_FAILURES else ""
        print(f"{'PASS' if passed else 'FAIL'} {name}{note}", flush=True)
        failed += not passed and name not in EXPECTED_FAILURES
    return failed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
