"""A headless "browser" for the OAuth tests, run by Python's webbrowser through $BROWSER.

    BROWSER="python oauth_browser.py --log FILE [--mode M] [--tag TAG] %s"

Modes: follow (default) fetches the authorization URL and follows its redirect to the
gateway's callback; wrong-state first sends the callback with another state, then the right
one; ignore only records the URL (the callback never arrives). Each visit is appended to
FILE as one JSON line: {"url": ..., "callback": URL, "callbacks": [[state_was_right, http_status], ...]}.
"""

import argparse
import json
import urllib.error
import urllib.request
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _with_state(url: str, state: str) -> str:
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query["state"] = state
    return urlunsplit(parts._replace(query=urlencode(query)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--mode", default="follow", choices=["follow", "wrong-state", "ignore"])
    parser.add_argument("--tag", default="")
    parser.add_argument("url")
    args = parser.parse_args()
    visit = {"url": args.url, "callbacks": []}
    if args.mode != "ignore":
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            opener.open(args.url, timeout=10)
            location = None
        except urllib.error.HTTPError as error:
            location = error.headers.get("Location") if error.code in (301, 302, 303, 307) else None
        if location:
            visit["callback"] = location  # carries the code: the leak test looks for it
            if args.mode == "wrong-state":
                visit["callbacks"].append([False, _status(_with_state(location, "not-the-state"))])
            visit["callbacks"].append([True, _status(location)])
    with open(args.log, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(visit) + "\n")


if __name__ == "__main__":
    main()
