"""An HTTP server that fails the MCP streamable-HTTP transport in chosen ways.

Standard library only. Usage: bad_http_server.py --port N --mode MODE [--tag TAG]

Every POST (and GET) is answered according to the mode:
    500    status 500 with a JSON body that is not JSON-RPC
    html   status 200, Content-Type text/html, an HTML page
    stall  status 200, Content-Type text/event-stream, one partial SSE event
           (no terminating blank line), then nothing until the process is killed
The tag only marks the process in /proc/*/cmdline.
"""

import argparse
import http.server
import threading

MODES = ("500", "html", "stall")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "500"
    stall_forever = threading.Event()  # never set: stalled handlers wait until the process dies

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass  # keep stderr quiet; tests do not read it

    def _drain_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _reply(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self):
        self._drain_body()
        if self.mode == "500":
            self._reply(500, "application/json", b'{"detail": "deliberate internal server error"}')
        elif self.mode == "html":
            self._reply(200, "text/html; charset=utf-8", b"<!doctype html><html><body><h1>Not MCP</h1></body></html>")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(b'event: message\ndata: {"jsonrpc": "2.0", "id"')
            self.wfile.flush()
            self.stall_forever.wait()

    do_POST = _answer
    do_GET = _answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    Handler.mode = args.mode
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
