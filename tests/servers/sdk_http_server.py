"""The SDK test server of sdk_stdio_server.py, served over streamable HTTP instead.

Usage: sdk_http_server.py --port N [--tag TAG]

Serves http://127.0.0.1:N/mcp with the same tools (echo, add, sleep). Nothing useful goes
to stdout; uvicorn logs go to stderr. Tests wait for readiness with
`harness.wait_for_port`. The tag only marks the process in /proc/*/cmdline.
"""

import argparse

from sdk_stdio_server import server  # this script's folder is on sys.path when it runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    server.run("streamable-http", host="127.0.0.1", port=args.port, streamable_http_path="/mcp")


if __name__ == "__main__":
    main()
