"""The OAuth token store: one 0600 JSON file per server in a 0700 folder, atomic writes, a file lock.

A record holds what the SDK's client auth asks its `TokenStorage` for (tokens, the client
registration) plus what lets a fresh session skip discovery: the discovered metadata, and
when the access token expires (an absolute time, which `expires_in` alone cannot give).

    <dir>/<key>.json   the record; replaced whole by rename, so a reader never sees half of one
    <dir>/<key>.lock   flock(2) on it serializes refresh and sign-in for that record, across
                       threads (each holder opens its own descriptor) and across processes

The key is a hash of the server URL and of the client the entry signs in as (clientId and
grant), so two entries for one server with different clients never share tokens. Nothing here
logs a record's contents: they are secrets.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from .model import HTTP, SSE, OAuthSettings, ServerSpec

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
RECORD_VERSION = 1
LOCK_POLL_S = 0.05  # how often a blocked holder tries the lock again


def default_oauth_dir(environ: Any, home: Path) -> Path:
    """GATEWAY_OAUTH_DIR, else $XDG_CONFIG_HOME/agent-mcp-gateway/oauth (~/.config/...)."""
    explicit = environ.get("GATEWAY_OAUTH_DIR")
    if explicit:
        return Path(explicit)
    config_home = environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config_home) / "agent-mcp-gateway" / "oauth"


def record_key(server_url: str, client_id: str | None = None, grant: str | None = None) -> str:
    """The file name (without suffix) of the record of one server signed in as one client."""
    identity = json.dumps([server_url, client_id or "", grant or "authorization_code"])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def uses_oauth(spec: ServerSpec) -> bool:
    """Whether calls to `spec` sign in when the server asks (http/sse, oauth not false)."""
    return spec.transport in (HTTP, SSE) and spec.oauth is not None and bool(spec.url)


def key_of(spec: ServerSpec) -> str:
    oauth = spec.oauth or OAuthSettings()
    return record_key(spec.url or "", oauth.client_id, oauth.grant)


class TokenStore:
    """The folder of records; every method is safe from any thread."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)

    # --- reading ------------------------------------------------------------------------

    def read(self, key: str) -> dict[str, Any]:
        """The record, or {} if there is none or it cannot be used (logged without content)."""
        path = self._path(key, ".json")
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("Ignoring the unreadable OAuth record %s (%s)", path, type(exc).__name__)
            return {}
        if not isinstance(record, dict) or record.get("version") != RECORD_VERSION:
            logger.warning("Ignoring the OAuth record %s: not a record of this gateway version", path)
            return {}
        return record

    def summary(self, key: str, now: float | None = None) -> dict[str, Any]:
        """What status and check may show: whether tokens are held and when they expire."""
        record = self.read(key)
        tokens = record.get("tokens") or {}
        expires_at = record.get("expires_at")
        now = time.time() if now is None else now
        summary: dict[str, Any] = {"signed_in": bool(tokens.get("access_token"))}
        if summary["signed_in"]:
            summary["expires_at"] = _iso(expires_at) if expires_at is not None else None
            summary["expired"] = expires_at is not None and now > expires_at
            summary["refreshable"] = bool(tokens.get("refresh_token"))
        return summary

    # --- writing (callers that may race hold `lock(key)`) ----------------------------------

    def update(self, key: str, **fields: Any) -> None:
        """Read the record, set `fields` (None removes one), and write it back atomically."""
        record = self.read(key)
        record["version"] = RECORD_VERSION
        for name, value in fields.items():
            if value is None:
                record.pop(name, None)
            else:
                record[name] = value
        self._write(key, record)

    def forget(self, key: str) -> bool:
        """Remove the record; True if there was one."""
        try:
            os.unlink(self._path(key, ".json"))
        except FileNotFoundError:
            return False
        return True

    def _write(self, key: str, record: dict[str, Any]) -> None:
        self._ensure_dir()
        final = self._path(key, ".json")
        temporary = final.with_name(f".{final.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    # --- locking --------------------------------------------------------------------------

    def lock(self, key: str) -> RecordLock:
        self._ensure_dir()
        return RecordLock(self._path(key, ".lock"))

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # mkdir's mode is cut by the umask, and the folder may predate us: set it outright.
        if (self.directory.stat().st_mode & 0o777) != DIR_MODE:
            os.chmod(self.directory, DIR_MODE)

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / f"{key}{suffix}"


class RecordLock:
    """An exclusive flock on one record's lock file, held by one descriptor of its own."""

    def __init__(self, path: Path):
        self._path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never blocks."""
        if self._fd is not None:
            raise RuntimeError("RecordLock is not reentrant")
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        self._fd = fd
        return True

    def acquire(self, timeout_s: float) -> bool:
        """Take the lock, waiting `timeout_s` at most; for threads that may block."""
        deadline = time.monotonic() + timeout_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL_S)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    @contextlib.contextmanager
    def holding(self, timeout_s: float) -> Iterator[bool]:
        acquired = self.acquire(timeout_s)
        try:
            yield acquired
        finally:
            if acquired:
                self.release()


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")

