"""Find missing runtime dependencies without importing them, and say how to install them.

`importlib.util.find_spec` only looks the package up on sys.path: cheap enough to run at
every start, where importing the SDK (about 0.9 s) would delay the `initialize` answer.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from typing import Iterable

# Import name -> pip requirement, as pyproject.toml's dependencies say (a test keeps them equal).
REQUIREMENTS = {
    "mcp": "mcp>=2.3,<3",
    "watchdog": "watchdog>=4",
    "jsonschema": "jsonschema>=4.18",
}


def missing_modules(names: Iterable[str] = REQUIREMENTS) -> list[str]:
    """The names among `names` that this Python cannot import."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken parent package, or a module without a spec
            found = False
        if not found:
            missing.append(name)
    return missing


def missing_message(missing: list[str], python: str = sys.executable) -> str:
    """One line naming what is missing and the command that installs it into this Python."""
    wanted = " ".join(shlex.quote(REQUIREMENTS[name]) for name in missing)
    return (f"gateway: cannot start: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed "
            f"for {python}; install with: {shlex.quote(python)} -m pip install {wanted}")
