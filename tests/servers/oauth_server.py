"""An OAuth-protected MCP server for the tests: the SDK's MCPServer as the resource server (its
`mcp.server.auth` bearer check and protected-resource metadata), and a small stdlib
authorization server of our own in the same process, on another port.

    oauth_server.py --port N [--tag TAG] [--client ID] [--cc-client ID:SECRET]
                    [--jwt-client ID --jwt-public-key PEM] [--transport streamable-http|sse]

Prints one JSON line {"issuer": URL} on stdout once the authorization server listens; the
MCP endpoint is http://127.0.0.1:N/mcp (or /sse). The authorization server approves every
authorization request at once (the "browser" only has to follow the redirect), checks PKCE,
rotates refresh tokens (a used one is refused), and has a few test controls:

    POST /admin/revoke-refresh       refuse every refresh token issued so far
    POST /admin/reset                forget registered clients, tokens, counts, delays
    POST /admin/refresh-delay?seconds=S   answer refresh requests this much later
    GET  /admin/stats                counts of registrations, authorizations and grants
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

ACCESS_VALID_S = 3600  # how long the resource server accepts a token, whatever expires_in says


class AuthorizationServer:
    """The state of the authorization server, guarded by one lock."""

    def __init__(self, public_clients: list[str], secret_clients: dict[str, str], jwt_clients: dict[str, str]):
        self.lock = threading.Lock()
        self.issuer = ""
        self.public_clients = public_clients
        self.secret_clients = secret_clients
        self.jwt_clients = jwt_clients  # client id -> PEM public key
        self.reset()

    def reset(self) -> None:
        self.clients: dict[str, dict] = {cid: {"redirect_uris": None} for cid in self.public_clients}
        self.codes: dict[str, dict] = {}
        self.access: dict[str, dict] = {}
        self.refresh: dict[str, dict] = {}
        self.lifetime_s = 3600
        self.refresh_delay_s = 0.0
        self.stats = {"metadata": 0, "registrations": 0, "authorizations": 0, "authorization_code": 0,
                      "refresh_token": 0, "refresh_refused": 0, "client_credentials": 0}

    def metadata(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "registration_endpoint": f"{self.issuer}/register",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post",
                                                      "private_key_jwt"],
            "authorization_response_iss_parameter_supported": True,
        }

    def issue(self, client_id: str, scope: str | None, with_refresh: bool = True) -> dict:
        access = "at-" + secrets.token_urlsafe(24)
        self.access[access] = {"client_id": client_id, "scope": scope, "until": time.time() + ACCESS_VALID_S}
        answer = {"access_token": access, "token_type": "Bearer", "expires_in": self.lifetime_s}
        if scope:
            answer["scope"] = scope
        if with_refresh:
            refresh = "rt-" + secrets.token_urlsafe(24)
            self.refresh[refresh] = {"client_id": client_id, "scope": scope, "revoked": False}
            answer["refresh_token"] = refresh
        return answer


class Handler(BaseHTTPRequestHandler):
    server_version = "test-oauth"
    state: AuthorizationServer

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if "json" in (self.headers.get("Content-Type") or ""):
            return json.loads(raw or "{}")
        return {key: values[0] for key, values in parse_qs(raw).items()}

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        state = self.state
        if parts.path.startswith(("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")):
            with state.lock:
                state.stats["metadata"] += 1
            self._json(200, state.metadata())
        elif parts.path == "/authorize":
            self._authorize(query)
        elif parts.path == "/admin/stats":
            with state.lock:
                self._json(200, dict(state.stats))
        else:
            self._json(404, {"error": "not_found"})

    def _authorize(self, query: dict[str, str]) -> None:
        state = self.state
        with state.lock:
            client = state.clients.get(query.get("client_id", ""))
            redirect_uri = query.get("redirect_uri", "")
            allowed = client is not None and (client["redirect_uris"] is None or redirect_uri in client["redirect_uris"])
            if not allowed or query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
                self._json(400, {"error": "invalid_request"})
                return
            code = "code-" + secrets.token_urlsafe(16)
            state.codes[code] = {"client_id": query["client_id"], "redirect_uri": redirect_uri,
                                 "challenge": query["code_challenge"], "scope": query.get("scope")}
            state.stats["authorizations"] += 1
        target = redirect_uri + "?" + urlencode({"code": code, "state": query.get("state", ""), "iss": state.issuer})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        state = self.state
        if parts.path == "/register":
            body = self._form()
            with state.lock:
                client_id = "dcr-" + secrets.token_urlsafe(8)
                state.clients[client_id] = {"redirect_uris": body.get("redirect_uris") or []}
                state.stats["registrations"] += 1
            self._json(201, {**body, "client_id": client_id, "token_endpoint_auth_method": "none",
                             "client_id_issued_at": int(time.time())})
        elif parts.path == "/token":
            self._token(self._form())
        elif parts.path == "/admin/refresh-delay":
            with state.lock:
                state.refresh_delay_s = float(query["seconds"])
            self._json(200, {})
        elif parts.path == "/admin/reset":
            with state.lock:
                state.reset()
            self._json(200, {})
        elif parts.path == "/admin/revoke-refresh":
            with state.lock:
                for record in state.refresh.values():
                    record["revoked"] = True
            self._json(200, {})
        else:
            self._json(404, {"error": "not_found"})

    def _token(self, form: dict[str, str]) -> None:
        state = self.state
        grant = form.get("grant_type")
        if grant == "refresh_token" and state.refresh_delay_s:
            time.sleep(state.refresh_delay_s)  # a slow authorization server, to widen races
        with state.lock:
            if grant == "authorization_code":
                code = state.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                if code is None or code["challenge"] != challenge or code["redirect_uri"] != form.get("redirect_uri"):
                    self._json(400, {"error": "invalid_grant"})
                    return
                state.stats["authorization_code"] += 1
                self._json(200, state.issue(code["client_id"], code["scope"]))
            elif grant == "refresh_token":
                record = state.refresh.pop(form.get("refresh_token", ""), None)
                if record is None or record["revoked"]:
                    state.stats["refresh_refused"] += 1
                    self._json(400, {"error": "invalid_grant"})
                    return
                state.stats["refresh_token"] += 1
                self._json(200, state.issue(record["client_id"], record["scope"]))
            elif grant == "client_credentials":
                client_id = self._authenticated_client(form)
                if client_id is None:
                    self._json(401, {"error": "invalid_client"})
                    return
                state.stats["client_credentials"] += 1
                self._json(200, state.issue(client_id, form.get("scope"), with_refresh=False))
            else:
                self._json(400, {"error": "unsupported_grant_type"})

    def _authenticated_client(self, form: dict[str, str]) -> str | None:
        state = self.state
        basic = self.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            return client_id if state.secret_clients.get(client_id) == secret else None
        if form.get("client_secret"):
            client_id = form.get("client_id", "")
            return client_id if state.secret_clients.get(client_id) == form["client_secret"] else None
        assertion = form.get("client_assertion")
        if assertion:
            import jwt

            unverified = jwt.decode(assertion, options={"verify_signature": False})
            key = state.jwt_clients.get(unverified.get("iss", ""))
            if key is None:
                return None
            try:
                claims = jwt.decode(assertion, key, algorithms=["RS256", "ES256"], audience=state.issuer)
            except jwt.PyJWTError:
                return None
            return claims["sub"]
        return None


class Verifier:
    """The resource server's token check, against the authorization server's table."""

    def __init__(self, state: AuthorizationServer):
        self.state = state

    async def verify_token(self, token: str) -> AccessToken | None:
        with self.state.lock:
            record = self.state.access.get(token)
        if record is None or record["until"] < time.time():
            return None
        scopes = (record["scope"] or "").split()
        return AccessToken(token=token, client_id=record["client_id"], scopes=scopes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", default="")
    parser.add_argument("--client", action="append", default=[], help="a pre-registered public client id")
    parser.add_argument("--cc-client", action="append", default=[], help="ID:SECRET for client_credentials")
    parser.add_argument("--jwt-client", default=None)
    parser.add_argument("--jwt-public-key", default=None)
    parser.add_argument("--transport", default="streamable-http")
    args = parser.parse_args()

    jwt_clients = {}
    if args.jwt_client:
        with open(args.jwt_public_key, encoding="utf-8") as handle:
            jwt_clients[args.jwt_client] = handle.read()
    state = AuthorizationServer(args.client, dict(item.split(":", 1) for item in args.cc_client), jwt_clients)
    Handler.state = state
    authorization_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    authorization_server.daemon_threads = True
    state.issuer = f"http://127.0.0.1:{authorization_server.server_address[1]}"
    threading.Thread(target=authorization_server.serve_forever, daemon=True).start()

    path = "/mcp" if args.transport == "streamable-http" else "/sse"
    server = MCPServer(
        "oauth-fixture", log_level="WARNING", token_verifier=Verifier(state),
        auth=AuthSettings(issuer_url=state.issuer, resource_server_url=f"http://127.0.0.1:{args.port}{path}",
                          validate_token_resource=False),
    )

    @server.tool()
    def echo(text: str) -> str:
        """Echo text."""
        return text

    @server.tool()
    def whoami() -> str:
        """The client id the call's token was issued to."""
        token = get_access_token()
        return token.client_id if token else "<anonymous>"

    print(json.dumps({"issuer": state.issuer}), flush=True)
    if args.transport == "streamable-http":
        server.run("streamable-http", host="127.0.0.1", port=args.port, streamable_http_path="/mcp")
    else:
        server.run("sse", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    sys.exit(main())
