"""One scoring run per prediction file at a time: an exclusive lock beside it (``preds.csv.lock``).

Two runs writing one ``--out`` (and its part files) would interleave their rows. The run that writes it (a
single process, the ``--nproc`` launcher, rank 0 under torchrun) holds an ``flock`` on ``preds.csv.lock`` from
before it touches any file until it has written the result; the ``--nproc`` launcher hands the locked file to
its workers, so the lock lasts while any of them runs. The kernel releases it when its last holder dies,
however it dies, so a killed run never blocks the next one. The file records who holds it, for the message a
second run gets; it is removed when the run ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from typing import Optional


class OutputLocked(RuntimeError):
    """Another scoring run is writing the same prediction file."""


def lock_path(out: str) -> str:
    return out + ".lock"


class OutputLock:
    """The exclusive lock of a prediction file; ``with OutputLock(out):`` or acquire() / release()."""

    def __init__(self, out: str, ending_wait_s: float = 15.0):
        """``ending_wait_s``: how long to wait when the run that took the lock is gone but the lock is still held:
        its ``--nproc`` workers die with it, and the kernel frees the lock only once their last thread has
        ended, which a re-run started right after the kill can precede."""
        self.out = out
        self.path = lock_path(out)
        self.ending_wait_s = ending_wait_s
        self.fd: Optional[int] = None

    def acquire(self) -> "OutputLock":
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        deadline = time.monotonic() + self.ending_wait_s
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                if _gone_here(holder) and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise OutputLocked(self._held_by(holder)) from None
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_dev, current.st_ino) == _inode(fd):
                break
            os.close(fd)  # the holder removed this file while releasing it: lock the one now at the path
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                 "command": " ".join(sys.argv)}).encode("utf-8"))
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if (os.stat(self.path).st_dev, os.stat(self.path).st_ino) == _inode(self.fd):
                os.remove(self.path)  # while still locked: nobody can have locked this file in between
        except FileNotFoundError:
            pass
        os.close(self.fd)  # processes handed the file (--nproc workers) keep the lock until they end
        self.fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _held_by(self, holder: Optional[dict]) -> str:
        advice = "wait for it to finish, or stop it, then re-run (it resumes)"
        if not holder:
            return f"another process holds {self.path}: another `iovqa score` is writing {self.out}; {advice}"
        pid, host = holder.get("pid"), holder.get("host")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        state = ""
        if _gone_here(holder):
            state = " (gone; a worker it started still runs and holds the lock)"
        return (f"{self.out} is being written by another `iovqa score`: pid {pid}{state} on {host}, since {since}: "
                f"{holder.get('command', '?')}; {advice}")


def _inode(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def _read(fd: int) -> Optional[dict]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 65536).decode("utf-8"))
    except (OSError, ValueError):
        return None  # still being written by its holder
    return holder if isinstance(holder, dict) else None


def _gone_here(holder: Optional[dict]) -> bool:
    """The lock's taker ran on this machine and has ended (the lock lives on in processes it started)."""
    pid = (holder or {}).get("pid")
    return (holder or {}).get("host") == socket.gethostname() and isinstance(pid, int) and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
