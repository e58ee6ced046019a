"""The MCP client the conformance suite's `auth/*` scenarios drive: a real gateway in front of the
suite's server.

    conformance client --command "python tests/conformance_oauth_client.py" --scenario auth/...

The suite runs this with the server URL as the last argument, the scenario in
MCP_CONFORMANCE_SCENARIO and credentials (if any) in MCP_CONFORMANCE_CONTEXT. It writes a
`.mcp.json` with one http entry for that URL (its `oauth` object from the context), starts the
gateway with the headless browser of the OAuth tests as $BROWSER, lists the server's tools with
`get_server_tools` and calls the first with `execute_tool`. Exit status 0 when both answered.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from oauth_harness import ALLOW_ALL, browser_env  # noqa: E402

SERVER = "conformance"
CIMD_URL = "https://conformance-test.local/client-metadata.json"


def oauth_entry(context: dict) -> dict:
    """The entry's `oauth` object for the scenario's credentials."""
    oauth: dict = {}
    if context.get("client_id"):
        oauth["clientId"] = context["client_id"]
    if context.get("client_secret"):
        oauth["clientSecret"] = context["client_secret"]
    if context.get("private_key_pem"):
        key_file = Path(tempfile.mkdtemp()) / "client-key.pem"
        key_file.write_text(context["private_key_pem"])
        oauth["privateKeyFile"] = str(key_file)
        oauth["signingAlgorithm"] = context.get("signing_algorithm") or "ES256"
    if "client-credentials" in context.get("name", ""):
        oauth["grant"] = "client_credentials"
    elif "clientId" not in oauth:
        # As the SDK's own conformance client does: a client ID metadata document, used where
        # the authorization server supports one; elsewhere the SDK registers dynamically.
        oauth["clientId"] = CIMD_URL
    return oauth


def main() -> int:
    url = sys.argv[-1]
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    with tempfile.TemporaryDirectory() as root:
        config = harness.ConfigDir(Path(root) / "config")
        entry = {"type": "http", "url": url}
        oauth = oauth_entry(context)
        if oauth:
            entry["oauth"] = oauth
        config.write({SERVER: entry}, ALLOW_ALL)
        env = {**browser_env(Path(root) / "browser.jsonl"), "GATEWAY_OAUTH_DIR": str(Path(root) / "oauth"),
               "HOME": root, "XDG_CACHE_HOME": str(Path(root) / "cache")}
        with config.gateway("--timeout-ms", "20000", env=env) as gateway:
            listed = gateway.call_tool("get_server_tools", {"server": SERVER})
            if listed.is_error:
                print(harness.result_text(listed), file=sys.stderr)
                return 1
            tools = listed.structured_content["tools"]
            if tools:
                called = gateway.call_tool("execute_tool", {"server": SERVER, "tool": tools[0]["name"], "args": {}})
                print(harness.result_text(called), file=sys.stderr)
        print(gateway.stderr_text(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
