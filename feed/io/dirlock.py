"""One owner per store directory: an exclusive ``flock`` on a lock file holding the PID.

Two tickscope processes writing one ``--data-dir`` would interleave their batches and
double the history on the next restart, so :class:`DirLock` lets exactly one process
open a store directory. The lock is the operating system's: it is released when the
owner closes it and when the owner dies in any way (kill -9 included), so a stale lock
file never blocks a restart. The file holds the owner's PID only to name it in the
refusal. Where ``fcntl`` does not exist (Windows) no lock is taken.
"""

from __future__ import annotations

import logging
import os

from feed.io.store_format import StoreLocked

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["DirLock", "LOCK_NAME"]

log = logging.getLogger("tickscope.store")

#: Name of the lock file inside the store directory.
LOCK_NAME = "tickscope.lock"


class DirLock:
    """An exclusive, process-wide lock on a directory, taken on construction.

    Parameters
    ----------
    directory : str
        The directory (must exist).

    Raises
    ------
    StoreLocked
        If another open lock holds it (another process, or another store in this one);
        the message names the directory and the PID written by the holder.
    OSError
        If the lock file cannot be created or locked for another reason.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, LOCK_NAME)
        self._fd: int | None = None  # open and locked while held
        if fcntl is None:
            log.debug("no fcntl: %s is not locked against a second process", directory)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder is not None else "another process"
            raise StoreLocked(
                f"the data directory {directory} is in use by {who}: one tickscope owns a data "
                "directory at a time. Stop that process, or give this one another --data-dir."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Written only after the lock is ours, so it always names the holder.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        """True until :meth:`release` (always False without ``fcntl``)."""
        return self._fd is not None

    def release(self) -> None:
        """Clear the PID and release the lock (idempotent). The file stays: removing it
        could let two processes lock two different files of the same name."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass  # the lock still goes with the descriptor
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    # The holder's PID, or None while it has not written it yet (or wrote garbage).
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
