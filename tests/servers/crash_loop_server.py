"""A stdio server that crashes at every start: it logs the start, then exits with status 1.

Usage: crash_loop_server.py --tag TAG --log FILE

Every start appends {"event": "start", "pid": ...} to FILE, so a test counts exactly how
many times the gateway launched it: a spare that is started again at once after every
crash shows up as a crash loop there.
"""

import json
import os
import sys


def main(argv):
    log = argv[argv.index("--log") + 1]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps({"event": "start", "pid": os.getpid()}) + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    sys.stderr.write("crash_loop_server: crashing at start, as always\n")
    sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
