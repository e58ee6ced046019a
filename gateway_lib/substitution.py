"""${VAR} and ${VAR:-default} substitution in server entries.

An unset variable without a default is left as written and remembered, so the server that
needs it can be marked unusable by name while every other server keeps working.
"""

from __future__ import annotations

import re
from typing import Mapping

# ${VAR} or ${VAR:-default}. As in the shell, the default is used when VAR is unset or empty.
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Substituter:
    """Replaces ${VAR} references from one environment, remembering unset variables."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ
        self.missing: list[str] = []

    def __call__(self, text: str) -> str:
        return _VARIABLE.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = self._environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            if name not in self.missing:
                self.missing.append(name)
            return match.group(0)  # left as written; the server is marked unusable
        return value


def unusable_message(name: str, missing: list[str]) -> str | None:
    # Names the variables only; their values (if any) never appear in a message.
    if not missing:
        return None
    if len(missing) == 1:
        return f"Server {name!r} needs environment variable {missing[0]!r}, which is not set"
    listed = ", ".join(map(repr, missing[:-1])) + f" and {missing[-1]!r}"
    return f"Server {name!r} needs environment variables {listed}, which are not set"
