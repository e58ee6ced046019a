#!/usr/bin/env python3
"""The floor of HTTP mode's benchmark: the standard library's ThreadingHTTPServer, set up as
the gateway's is (HTTP/1.1 kept alive, Nagle off, a thread per connection), answering every
JSON-RPC POST at once with a fixed result and no other work.

    python http_floor_server.py --tag TAG

Prints its URL on stdout, then serves until killed. The row that runs it says how much of
the gateway's latency under 100 concurrent clients the design's server alone costs.
"""

import argparse
import json
import secrets
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESULT = {"content": [{"type": "text", "text": "{}"}]}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        message = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "id" not in message:  # a notification
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": RESULT}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if message.get("method") == "initialize":
            self.send_header("Mcp-Session-Id", secrets.token_urlsafe(32))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # as the gateway's: a hundred clients connecting at once all get in


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="", help="a marker in argv for the leak checks")
    parser.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}/mcp", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
