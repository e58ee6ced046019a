#!/usr/bin/env python3
"""The drop-in entry point: `python gateway.py` serves MCP on stdio. See README.md."""

import sys

from gateway_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
