"""The run folder: created and checked writable up front, and held by one run at a time.

Two runs writing the same checkpoints and reports corrupt each other (one dies inside orbax, the other
keeps files the first half wrote). :func:`hold` takes an exclusive, advisory lock on
``<workdir>/.mesojax.lock`` for as long as a run uses the folder; a second run fails at once with a
message naming the holder (pid, host, start time and command). The lock is the operating system's
(``fcntl.flock``), so a run that is killed releases it: there is no stale lock to delete by hand.

Example::

    with workdir.hold("runs/phantom"):
        ...  # train, evaluate, report
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
from typing import Iterator

LOCK_NAME = ".mesojax.lock"

_held: dict[str, int] = {}  # real path -> depth: one process may nest holds (run -> train)


class WorkdirBusyError(RuntimeError):
    """Another run holds the workdir."""


def create(path: str) -> str:
    """Create `path` (and parents) and check a file can be written there; returns its real path.

    Raises:
      OSError: naming the folder and why it cannot be used (the system's reason, e.g. permission).
    """
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.ENOENT:
            reason = "a parent folder cannot be created (it does not exist, or is not a writable filesystem)"
        raise OSError(f"workdir {path!r} cannot be created or written: {reason}; choose a folder you can "
                      "write to with --workdir") from None
    return os.path.realpath(path)


@contextlib.contextmanager
def hold(path: str) -> Iterator[str]:
    """Create `path` and hold its lock for the duration of the block (re-entrant within a process).

    Raises:
      WorkdirBusyError: another process holds it (the message names that run).
      OSError: the folder cannot be created or written (:func:`create`).
    """
    real = create(path)
    if real in _held:
        _held[real] += 1
        try:
            yield real
        finally:
            _held[real] -= 1
        return
    lock_path = os.path.join(real, LOCK_NAME)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise WorkdirBusyError(
            f"workdir {path!r} is in use by another run ({holder}); wait for it to finish, stop it, or use "
            "another --workdir") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.datetime.now().isoformat(timespec="seconds"),
                                 "command": " ".join(sys.argv)}).encode())
        _held[real] = 1
        yield real
    finally:
        _held.pop(real, None)
        os.close(fd)  # releases the lock; the file stays, naming the last holder


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return "holder unknown"
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}: "
            f"{info.get('command', '?')}")
