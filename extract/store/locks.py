"""One writer per slide group: lock files that work across processes and hosts sharing a folder.

``filelock`` locks are advisory OS locks (flock), which NFS/Lustre often do not honour across hosts and
which vanish with their process without saying who held them; the scale-out setting (dask workers on several
hosts writing one store) needs a lock file that names its owner and goes stale without a heartbeat, so this
is our own.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from slidemil.core.errors import StoreError

STALE_LOCK_SECONDS = 900.0


class SlideLock:
    """Exclusive lock on one slide group: ``.locks/<slide_id>.lock`` created with ``O_CREAT | O_EXCL``.

    The file holds the owner's host and PID. A lock is stale (and broken) when its owner is a dead PID on
    this host, or when it has not been refreshed (``refresh``, called once per batch) for
    ``stale_after`` seconds, which covers owners on other hosts.
    """

    def __init__(self, path: Path, stale_after: float = STALE_LOCK_SECONDS) -> None:
        self.path = path
        self.stale_after = stale_after
        self.held = False

    def acquire(self) -> bool:
        """Try once to take the lock (breaking a stale one); return whether it is held now."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
            self.held = True
            return True
        return False

    def wait(self, poll: float = 0.2, timeout: float | None = None) -> bool:
        """Block until the lock is held (True) or ``timeout`` seconds passed (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.acquire():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(poll)
        return True

    def refresh(self) -> None:
        """Heartbeat: touch the lock so writers on other hosts do not take it for stale."""
        if self.held:
            os.utime(self.path)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)

    def owner(self) -> str:
        info = _read_lock(self.path)
        return f"pid {info.get('pid')} on {info.get('host')}" if info else "another writer"

    def __enter__(self) -> SlideLock:
        if not self.acquire():
            raise StoreError(f"{self.path} is held by {self.owner()}; one writer per slide group")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _break_if_stale(self) -> bool:
        info = _read_lock(self.path)
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: try again
        if info is None and age < 5.0:
            return False  # being written right now
        if not _is_stale(info, age, self.stale_after):
            return False
        # Move the stale file aside under a unique name (atomic), so two writers cannot both break it.
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        if _read_lock(aside) != info:  # we moved a fresh lock taken meanwhile: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _is_stale(info: dict[str, Any] | None, age: float, stale_after: float) -> bool:
    if info and info.get("host") == socket.gethostname():
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, KeyError):
            pass
        else:
            return False
    return age > stale_after
