"""Tool-definition pins: trust a server's tools on first use, then refuse (or flag) silent changes.

A pin is the SHA-256 of the canonical JSON of a tool's name, description, inputSchema,
outputSchema and annotations, kept with the definition itself so a change can be shown.
The pin file is the third config-like file: read, checked against its JSON Schema and
semantically (each hash matches its definition), then swapped whole; a file that fails
keeps the pins in force. The running gateway notices an edited file (a `pins approve`,
a `git pull`) by its stat signature on the next review, so no watcher is needed for it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from .audit import utc_now
from .errors import ConfigError, Problem, ToolChanged
from .jsonfile import Document, read_document
from .schema_check import schema_problems

logger = logging.getLogger(__name__)

PINS_NAME = ".mcp-gateway-pins.json"
PINS_ENV = "GATEWAY_PINS"
PINS_SCHEMA = "gateway-pins.schema.json"
PINNED_FIELDS = ("name", "description", "inputSchema", "outputSchema", "annotations")
FIELD_WORDS = {"name": "name", "description": "description", "inputSchema": "input schema",
               "outputSchema": "output schema", "annotations": "annotations"}
BLOCK, WARN = "block", "warn"
META_KEY = "agent-mcp-gateway/tool-changed"
CHANGED, ADDED = "changed", "added"


# ---------------------------------------------------------------------------- fingerprints


def pinned_part(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a pin covers, as the server gave them (absent or null fields left out)."""
    return {key: tool[key] for key in PINNED_FIELDS if tool.get(key) is not None}


def fingerprint(tool: Mapping[str, Any]) -> str:
    canonical = json.dumps(pinned_part(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Pin:
    sha256: str
    pinned_at: str
    definition: Mapping[str, Any]


@dataclass(frozen=True)
class PinSet:
    """The parsed pin file: server -> tool -> Pin. Never changed in place."""

    path: str
    servers: Mapping[str, Mapping[str, Pin]] = field(default_factory=lambda: MappingProxyType({}))

    def to_data(self) -> dict[str, Any]:
        return {"version": 1, "servers": {
            server: {name: {"sha256": pin.sha256, "pinned_at": pin.pinned_at, "definition": dict(pin.definition)}
                     for name, pin in sorted(tools.items())}
            for server, tools in sorted(self.servers.items())
        }}

    def with_tools(self, server: str, tools: Iterable[Mapping[str, Any]], names: set[str] | None = None,
                   now: str | None = None) -> PinSet:
        """A new PinSet where `server`'s tools (those in `names`, or all: then removed ones go) are pinned."""
        now = now or utc_now()
        kept = dict(self.servers.get(server, {})) if names is not None else {}
        for tool in tools:
            if names is None or tool["name"] in names:
                kept[tool["name"]] = Pin(fingerprint(tool), now, MappingProxyType(pinned_part(tool)))
        return PinSet(self.path, MappingProxyType({**self.servers, server: MappingProxyType(kept)}))


@dataclass(frozen=True)
class Change:
    """A listed tool that does not match its pin: changed, or added to a pinned server."""

    server: str
    tool: str
    kind: str  # CHANGED or ADDED
    fields: tuple[str, ...] = ()
    sha256: str = ""

    def summary(self) -> str:
        if self.kind == ADDED:
            return "a new tool, not pinned yet"
        return ", ".join(FIELD_WORDS[f] for f in self.fields) + " changed since it was pinned"

    def approve_hint(self) -> str:
        return (f"to see the change run 'gateway.py pins diff {self.server}'; to accept it, "
                f"'gateway.py pins approve {self.server} {self.tool}'")


def compare(pinset: PinSet, server: str, tools: Iterable[Mapping[str, Any]]) -> list[Change] | None:
    """The tools that differ from their pins; None when the server has no pins at all."""
    pinned = pinset.servers.get(server)
    if pinned is None:
        return None
    changes = []
    for tool in tools:
        digest = fingerprint(tool)
        pin = pinned.get(tool["name"])
        if pin is None:
            changes.append(Change(server, tool["name"], ADDED, sha256=digest))
        elif pin.sha256 != digest:
            now = pinned_part(tool)
            fields = tuple(f for f in PINNED_FIELDS if pin.definition.get(f) != now.get(f))
            changes.append(Change(server, tool["name"], CHANGED, fields, digest))
    return changes


def removed(pinset: PinSet, server: str, tools: Iterable[Mapping[str, Any]]) -> list[str]:
    listed = {tool["name"] for tool in tools}
    return sorted(set(pinset.servers.get(server, {})) - listed)


def diff_lines(server: str, pin: Pin | None, tool: Mapping[str, Any]) -> list[str]:
    """A unified diff of the pinned and the listed definition, one field per block of lines."""
    def lines(definition: Mapping[str, Any]) -> list[str]:
        shown = {key: definition[key] for key in PINNED_FIELDS if key in definition}
        return json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False).splitlines()

    before = lines(pin.definition) if pin is not None else []
    return list(difflib.unified_diff(before, lines(pinned_part(tool)), f"pinned {server}/{tool['name']}",
                                     f"listed {server}/{tool['name']}", lineterm="", n=2))


# ---------------------------------------------------------------------------- the file


def find_pins_path(explicit: str | None, rules_path: Path, bundled: Path, user_config: Path) -> Path:
    """--pins / GATEWAY_PINS as given; else beside the rules file, unless that is the bundled
    default (part of the package, not the user's): then in the user's config folder."""
    if explicit:
        return Path(os.path.abspath(os.path.expanduser(explicit)))
    folder = rules_path.parent
    if os.path.realpath(folder) == os.path.realpath(bundled):
        folder = user_config
    return folder / PINS_NAME


def _semantic_problems(document: Document) -> list[Problem]:
    servers = document.data.get("servers") if isinstance(document.data, dict) else None
    problems = []
    for server, tools in (servers or {}).items() if isinstance(servers, dict) else ():
        for name, pin in (tools or {}).items() if isinstance(tools, dict) else ():
            if not isinstance(pin, dict) or not isinstance(pin.get("definition"), dict):
                continue
            where = ("servers", server, name)
            if pin["definition"].get("name") != name:
                problems.append(document.problem(where + ("definition", "name"), f"must be {name!r}, the key"))
            elif pin.get("sha256") != fingerprint(pin["definition"]):
                problems.append(document.problem(where + ("sha256",),
                                                 "does not match the definition: re-pin with 'gateway.py pins approve'"))
    return problems


def load_pins(path: str | os.PathLike[str]) -> PinSet:
    """The pins in `path`; an empty PinSet when the file does not exist. Raises ConfigError."""
    path = str(path)
    if not os.path.exists(path):
        return PinSet(path)
    document, problems = read_document(path)
    problems += schema_problems(document, PINS_SCHEMA, {})
    if not problems:
        problems += _semantic_problems(document)
    if problems:
        raise ConfigError(problems)
    servers = {
        server: MappingProxyType({name: Pin(p["sha256"], p["pinned_at"], MappingProxyType(p["definition"]))
                                  for name, p in tools.items()})
        for server, tools in document.data["servers"].items()
    }
    return PinSet(path, MappingProxyType(servers))


def pin_problems(path: str | os.PathLike[str]) -> list[Problem]:
    """What `check` says about the pin file: every problem, or none (a missing file is fine)."""
    try:
        load_pins(path)
    except ConfigError as exc:
        return exc.problems
    return []


def write_pins(pinset: PinSet) -> None:
    """Write atomically: a temporary file in the same folder, renamed over the old one."""
    folder = os.path.dirname(os.path.abspath(pinset.path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".pins-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(pinset.to_data(), file, indent=2, ensure_ascii=False)
            file.write("\n")
        os.replace(temporary, pinset.path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# ---------------------------------------------------------------------------- the running gateway


@dataclass(frozen=True)
class Review:
    """What the gateway does with one listed server: hide `blocked`, flag `warnings`."""

    blocked: frozenset[str] = frozenset()
    warnings: Mapping[str, str] = field(default_factory=dict)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class PinStore:
    """The pins in force; pins first-seen servers, and judges every listed tool against its pin."""

    def __init__(self, path: str | os.PathLike[str], audit: Any = None):
        self._path = str(path)
        self._audit = audit
        self._lock = threading.RLock()
        self._signature = _signature(self._path)
        self._pins = load_pins(self._path)  # a bad file at start-up stops the gateway, like the others
        self._reported: set[tuple[str, str, str, str]] = set()  # one audit line per change and mode
        # Per server, the last review and what it judged: the catalog hands out the same cached
        # list object until it lists again, so a repeat is answered without hashing every tool.
        self._last_review: dict[str, tuple[list[dict], PinSet, str, Review]] = {}

    @property
    def path(self) -> str:
        return self._path

    def current(self) -> PinSet:
        """The pins in force, re-read first when the file changed on disk since it was last read."""
        # Looked at before the lock: a system call under it would hold every other reviewer
        # up while this thread waits to run again. Checked again under it only on a change.
        signature = _signature(self._path)
        with self._lock:
            if signature != self._signature and (signature := _signature(self._path)) != self._signature:
                self._signature = signature
                try:
                    self._pins = load_pins(self._path)
                    logger.info("Reloaded pins from %s", self._path)
                    self._record("config_reload", file="gateway_pins", path=self._path, outcome="applied")
                except ConfigError as exc:
                    logger.error("Pin file %s rejected; the previous pins stay in force:", self._path)
                    for problem in exc.problems:
                        logger.error("  %s", problem)
                    self._record("config_reload", file="gateway_pins", path=self._path, outcome="rejected",
                                 error=f"{len(exc.problems)} problem(s)")
            return self._pins

    def review(self, server: str, tools: list[dict], mode: str) -> Review:
        with self._lock:
            pins = self.current()
            last = self._last_review.get(server)
            if last is not None and last[0] is tools and last[1] is pins and last[2] == mode:
                return last[3]  # the same list against the same pins: reported already
            changes = compare(pins, server, tools)
            if changes is None:
                self._trust_on_first_use(pins, server, tools)
                return Review()
            for change in changes:
                self._report(change, mode)
            if mode == WARN:
                review = Review(warnings={c.tool: f"Tool {c.tool!r} on server {c.server!r}: {c.summary()}; "
                                                  f"{c.approve_hint()}" for c in changes})
            else:
                review = Review(blocked=frozenset(c.tool for c in changes))
            self._last_review[server] = (tools, pins, mode, review)
            return review

    def review_one(self, server: str, definition: dict, mode: str) -> str | None:
        """Before a call of a tool: raise ToolChanged (block), or return the warning (warn)."""
        with self._lock:
            changes = compare(self.current(), server, [definition])
            if not changes:
                return None  # matches, or the server is not pinned yet (its next listing pins it)
            self._report(changes[0], mode)
        change = changes[0]
        if mode == WARN:
            return f"Tool {change.tool!r} on server {change.server!r}: {change.summary()}; {change.approve_hint()}"
        raise ToolChanged(f"Tool {change.tool!r} on server {change.server!r} is blocked: {change.summary()}; "
                          f"{change.approve_hint()}", server=change.server, tool=change.tool,
                          change=change.kind, fields=[FIELD_WORDS[f] for f in change.fields])

    def _trust_on_first_use(self, pins: PinSet, server: str, tools: list[dict]) -> None:
        updated = pins.with_tools(server, tools)
        try:
            write_pins(updated)
        except OSError as exc:
            logger.error("Cannot write pin file %s (%s); pins of %r are kept in memory only",
                         self._path, exc.strerror, server)
        self._pins, self._signature = updated, _signature(self._path)
        logger.info("Pinned %d tool(s) of server %r on first use", len(tools), server)
        self._record("tools_pinned", server=server, tools=sorted(t["name"] for t in tools), reason="first use")

    def _report(self, change: Change, mode: str) -> None:
        key = (change.server, change.tool, change.sha256, mode)
        if key in self._reported:
            return
        self._reported.add(key)
        action = "served with a warning" if mode == WARN else "blocked"
        logger.warning("Tool %r on server %r: %s; %s", change.tool, change.server, change.summary(), action)
        self._record("tool_changed", server=change.server, downstream_tool=change.tool, change=change.kind,
                     fields=[FIELD_WORDS[f] for f in change.fields], action=mode)

    def _record(self, event: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.record(event, **fields)


class PinnedLists:
    """Where lists fetched off a call go (the eager warm-up, a spare starting): into the tool
    cache, and judged against the pins as any listing is. Trust on first use then writes the
    pin file at that first listing, not during the agent's first get_server_tools."""

    def __init__(self, catalog: Any, pins: PinStore, mode: Callable[[], str]):
        self._catalog = catalog
        self._pins = pins
        self._mode = mode  # the rules' on_tool_change, read at each listing

    def is_cached(self, spec: Any) -> bool:
        return self._catalog.is_cached(spec)

    def store(self, spec: Any, tools: list[dict]) -> None:
        self._pins.review(spec.name, self._catalog.store(spec, tools), self._mode())
