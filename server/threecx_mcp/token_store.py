"""The access token shared by this machine's processes that log in with one API client.

3CX keeps one live token per API client: two processes minting their own would end each
other's sessions on every mint. So they keep the token in one file per (PBX origin, API
client), and mint only while holding an exclusive lock on it, after re-reading it: the
second process finds the first one's token and uses it instead of minting.

The file holds the token and its expiry on this machine's clock, never the API key; it is
mode 0600 in a 0700 directory. A damaged file is ignored (and replaced by the next mint).
Windows has no `fcntl`: there `TokenFile.for_client` gives None and each process keeps its
own token, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import platformdirs

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredToken:
    token: str
    expires_at: float  # time.time() after which it is not offered any more


def default_directory() -> Path:
    return Path(platformdirs.user_state_dir("threecx-mcp", appauthor=False)) / "tokens"


class TokenFile:
    """One API client's shared token file; `locked()` serialises minting across processes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_client(
        cls, origin: str, client_id: str, client_secret: str, directory: Path | None = None
    ) -> TokenFile | None:
        """The file for this PBX and API client (in `directory`, default the per-user state
        directory), or None where processes cannot lock files (Windows).

        The API key is part of the (hashed) name: a process holding a wrong or revoked key must not
        pick up a token that the right key minted, or it would look as if its key worked.
        """
        if sys.platform == "win32":
            return None
        name = hashlib.sha256(f"{origin}\n{client_id}\n{client_secret}".encode()).hexdigest()
        return cls((directory or default_directory()) / f"{name}.json")

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"

    @asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """Hold the exclusive lock (waiting for it off the event loop). If the lock cannot be had
        (an unwritable directory), go on unlocked: sharing is an optimisation, never a failure."""
        fd = await anyio.to_thread.run_sync(self._acquire)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the lock

    def _acquire(self) -> int | None:
        if sys.platform == "win32":
            return None
        try:
            self._make_directory()
            fd = os.open(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning(
                "Token file %s cannot be locked (%s); not sharing the token.", self.path, exc.strerror
            )
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            return None
        return fd

    def read(self) -> StoredToken | None:
        """The stored token, or None when there is none or the file is damaged in any way."""
        try:
            data = json.loads(self.path.read_bytes())
            token, expires_at = data["token"], data["expires_at"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(token, str) or not token or not isinstance(expires_at, int | float):
            return None
        return StoredToken(token, float(expires_at))

    def write(self, stored: StoredToken) -> None:
        """Replace the file atomically (a reader sees the old token or the new, never half of one)."""
        try:
            self._make_directory()
            fd, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".token-", suffix=".tmp")  # 0600
            try:
                with os.fdopen(fd, "w") as file:
                    json.dump({"token": stored.token, "expires_at": stored.expires_at}, file)
                os.replace(temporary, self.path)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError as exc:
            log.warning(
                "Token file %s cannot be written (%s); not sharing the token.", self.path, exc.strerror
            )

    def _make_directory(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
