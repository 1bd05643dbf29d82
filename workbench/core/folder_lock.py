"""One owner at a time for a folder that a long command writes (a sweep; a tuning study).

`owned(folder, "sweep")` holds an exclusive `flock` on `folder/owner.lock` for the block and
writes the holder into it (host, PID, start time, what it runs). A second owner is refused at
once with `FolderInUseError` naming the holder. The kernel releases a flock when its process
ends however it ends, so a lock file left by a killed process holds no lock: the next owner
takes it over and says whose it was (on this host: that the PID is gone). On a shared
filesystem (NFS) the flock is the server's lock, honoured across hosts; a holder on another
host cannot be checked by PID, so the refusal names its host, and its lock ends when the
server drops it (the holder's host stopped renewing its lease). A filesystem that refuses locks
is an error, never a silent lack of one. Re-entrant within a process: an owner may call code
that takes the same folder's lock (a study running sweep points).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workbench.core.errors import UserError
from workbench.core.facts import LOCK_FILE

_HELD: dict[Path, tuple[int, int]] = {}  # folders this process owns → (nested blocks, lock fd)
_GUARD = threading.Lock()


class FolderInUseError(UserError):
    """Another process owns the folder."""

    def __init__(self, folder: Path, holder: dict[str, Any]) -> None:
        pid, host = holder.get("pid"), holder.get("host")
        stop = f"stop it (kill {pid}" + ("" if host == socket.gethostname() else f" on {host}") + ")"
        super().__init__(
            f"folder {folder} is in use by {describe(holder)}; wait until it ends, or {stop} and run "
            f"this command again to resume; or give another folder"
        )
        self.folder, self.holder = folder, holder


def describe(holder: dict[str, Any]) -> str:
    """'sweep (PID 123 on host h, since 2026-12-04 10:00:00)'; what is known of a holder."""
    if not holder:
        return "another process (its record is not written yet)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    pid, host = holder.get("pid"), holder.get("host")
    return f"{holder.get('purpose', '?')} (PID {pid} on host {host}, since {since})"


def _record(path: Path) -> dict[str, Any]:
    """The holder written in a lock file ({} when empty or unreadable: being written)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _gone(holder: dict[str, Any]) -> str:
    """Why a recorded holder no longer holds its lock, as far as this host can tell."""
    if holder.get("host") != socket.gethostname():
        return f"its host released the lock (this host cannot check PID {holder.get('pid')} there)"
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return f"PID {holder.get('pid')} is gone"
    except (PermissionError, ValueError, OverflowError):
        pass
    return "that process no longer holds it"


def _acquire(path: Path) -> int | None:
    """An fd holding the flock of `path` (the file as it is now on disk), None when taken."""
    for _ in range(10):  # the previous owner may remove the file between our open and our lock
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as error:
            os.close(fd)
            raise UserError(
                f"cannot lock {path} ({error.strerror}): this filesystem refuses file locks, so two "
                f"commands could write the folder at once; use a folder on a local disk"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise UserError(f"cannot lock {path}: other processes keep replacing it")


def _take(folder: Path, purpose: str) -> int:
    """Lock the folder for this process, or raise FolderInUseError naming the holder."""
    path = folder / LOCK_FILE
    fd = _acquire(path)
    if fd is None:
        holder = _record(path)
        for _ in range(20):  # a holder that has just locked writes its record right after
            if holder:
                break
            time.sleep(0.05)
            holder = _record(path)
        raise FolderInUseError(folder, holder)
    left = _record(path)
    if left:
        print(
            f"note: taking over {folder}: its lock was left by {describe(left)}; {_gone(left)}",
            file=sys.stderr,
            flush=True,
        )
    mine = {"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(mine).encode(), 0)  # into the locked file itself: a rename would unlock
    return fd


@contextmanager
def owned(folder: str | Path, purpose: str) -> Iterator[Path]:
    """Own `folder` (created if missing) for the block; FolderInUseError when another process
    owns it. `purpose` names the command in the holder's record and in refusals."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with _GUARD:
        depth, fd = _HELD[folder] if folder in _HELD else (0, _take(folder, purpose))
        _HELD[folder] = (depth + 1, fd)
    try:
        yield folder
    finally:
        with _GUARD:
            depth, fd = _HELD.pop(folder)
            if depth > 1:
                _HELD[folder] = (depth - 1, fd)
            else:
                (folder / LOCK_FILE).unlink(missing_ok=True)  # removed while still locked
                os.close(fd)
