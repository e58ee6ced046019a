"""The server-entry keys Claude Code writes beyond the gateway's own: `oauth`, `timeout`,
`headersHelper`, `type: "ws"`; and the warning for every `oauth` key the gateway does not use.

config.py calls in here at three points: semantic problems of an entry (errors), warnings
of an entry (ignored or duplicated keys), and building the entry's OAuthSettings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from . import model
from .jsonfile import Document, JsonPath, quote
from .schema_check import MCP_CONFIG_SCHEMA, schema_validator

WEBSOCKET_TYPES = ("ws", "websocket")
_REMOTE = (model.HTTP, model.SSE, "streamable-http")


def _oauth_keys() -> frozenset[str]:
    return frozenset(schema_validator(MCP_CONFIG_SCHEMA).schema["$defs"]["oauth"]["properties"])


def _is_remote(entry: Mapping[str, Any]) -> bool:
    given = entry.get("type", entry.get("transport"))
    return given in _REMOTE if given is not None else "url" in entry


def entry_problems(document: Document, path: JsonPath, entry: Mapping[str, Any]) -> list:
    """Errors: a WebSocket entry, and `oauth` keys that do not fit together."""
    problems = []
    for key in ("type", "transport"):
        if entry.get(key) in WEBSOCKET_TYPES:
            problems.append(document.problem(path + (key,), (
                f"{quote(entry[key])} (WebSocket) servers are not supported: the MCP SDK the gateway "
                "uses has no WebSocket client; use the server's 'http' or 'sse' endpoint if it has one")))
    oauth = entry.get("oauth")
    if isinstance(oauth, dict):
        problems += [document.problem(path + ("oauth",) + sub, message) for sub, message in _oauth_problems(oauth)]
    return problems


def _oauth_problems(oauth: Mapping[str, Any]) -> list[tuple[JsonPath, str]]:
    problems: list[tuple[JsonPath, str]] = []
    client_id = oauth.get("clientId")
    cimd = isinstance(client_id, str) and client_id.startswith("https://")
    if cimd and not urlsplit(client_id).path.strip("/"):
        problems.append((("clientId",), "a clientId that is a URL (a client ID metadata document) needs a path, "
                                        "e.g. 'https://example.com/client.json'"))
    if oauth.get("grant") == model.CLIENT_CREDENTIALS:
        if not client_id:
            problems.append((("grant",), "grant 'client_credentials' needs 'clientId'"))
        elif cimd:
            problems.append((("clientId",), "grant 'client_credentials' needs a registered clientId, not a URL"))
        if ("clientSecret" in oauth) == ("privateKeyFile" in oauth):
            problems.append((("grant",), "grant 'client_credentials' needs exactly one of 'clientSecret' "
                                         "and 'privateKeyFile' (private_key_jwt)"))
    elif "privateKeyFile" in oauth:
        problems.append((("privateKeyFile",), "'privateKeyFile' is for grant 'client_credentials': "
                                              "add \"grant\": \"client_credentials\""))
    if "signingAlgorithm" in oauth and "privateKeyFile" not in oauth:
        problems.append((("signingAlgorithm",), "'signingAlgorithm' needs 'privateKeyFile'"))
    if "clientSecret" in oauth and not client_id:
        problems.append((("clientSecret",), "'clientSecret' needs the 'clientId' it belongs to"))
    if "clientSecret" in oauth and cimd:
        problems.append((("clientSecret",), "a client ID metadata document (a URL clientId) has no secret"))
    return problems


def entry_warnings(document: Document, path: JsonPath, entry: Mapping[str, Any]) -> list[str]:
    """Keys that are ignored here, or given twice; each as 'file:line: $.path: message'."""
    warnings = []
    if "timeout" in entry and "timeout_ms" in entry:
        warnings.append(document.problem(path + ("timeout",), (
            "both 'timeout' (Claude Code's name) and 'timeout_ms' are given: 'timeout_ms' is used")))
    remote = _is_remote(entry)
    for key in ("oauth", "headersHelper"):
        if key in entry and not remote:
            warnings.append(document.problem(path + (key,), f"{quote(key)} is for http/sse servers: ignored"))
    # An unknown key of the entry itself is config.py's warning (with its nearest known key).
    oauth = entry.get("oauth")
    if isinstance(oauth, dict):
        for key in oauth:
            if key not in _oauth_keys():
                warnings.append(document.problem(path + ("oauth", key),
                                                 f"oauth key {quote(key)} is not used by the gateway: ignored"))
    return [str(warning) for warning in warnings]


def timeout_ms(entry: Mapping[str, Any]) -> int | None:
    """`timeout_ms`, else Claude Code's `timeout` (also milliseconds)."""
    return entry.get("timeout_ms", entry.get("timeout"))


def build_oauth(
    entry: Mapping[str, Any], substitute: Callable[[str], str], config_dir: Path
) -> model.OAuthSettings | None:
    """The entry's OAuthSettings; None when `"oauth": false`."""
    oauth = entry.get("oauth", {})
    if oauth is False:
        return None
    if not oauth:
        return model.DEFAULT_OAUTH

    def text(key: str) -> str | None:
        value = oauth.get(key)
        return substitute(value) if isinstance(value, str) else None

    key_file = text("privateKeyFile")
    return model.OAuthSettings(
        client_id=text("clientId"),
        client_secret=text("clientSecret"),
        callback_port=oauth.get("callbackPort"),
        auth_server_metadata_url=text("authServerMetadataUrl"),
        scopes=oauth.get("scopes"),
        grant=oauth.get("grant", model.AUTHORIZATION_CODE),
        private_key_file=os.path.normpath(config_dir / os.path.expanduser(key_file)) if key_file else None,
        signing_algorithm=oauth.get("signingAlgorithm"),
    )
