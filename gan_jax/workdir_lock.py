"""One run per workdir: a lock file, `<workdir>/run.lock`, held while a trainer runs.

Two trainers on one workdir would each write the same checkpoint steps and interleave one
metrics.jsonl. So `train_and_evaluate` takes the lock before it writes anything and releases it
when it returns or raises; a second trainer stops at once with `WorkdirHeldError`, naming the
holder (host, pid, start time, command) read from the file.

- Locally the file is created with O_CREAT | O_EXCL: of two trainers starting together, exactly
  one gets it.
- A lock left by a run that died (kill -9, a crash, a reboot) does not block: when the holder's
  host is this host and its pid no longer runs (or now belongs to a process started at another
  time), the lock is taken over and a warning says so.
- A holder on another host (a shared file system) cannot be checked from here; the message says
  to delete the lock file if that run is gone.
- A multi-process run takes it once, from process 0 (see `train.train_and_evaluate`), so the
  processes of one run never block each other.
- On a bucket (`gs://...`) the file is read and written through epath: best effort, as a bucket
  has no exclusive create here; two trainers starting within the same second may both start.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import socket
import sys
import time
import uuid
from typing import Any

from absl import logging
from etils import epath

from gan_jax import paths
from gan_jax.checkpointing import WorkdirError

LOCK_FILE = "run.lock"
# A lock file is created and then written; a reader that finds it empty waits this long for it.
_PARTIAL_WRITE_WAIT_S = 1.0


class WorkdirHeldError(WorkdirError):
    """Another run holds the workdir; the message names it and what to do."""


# ----------------------------------------------------------------------------------------------
# Who holds it.


def _process_start_ticks(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None if unknown.

    With the pid it identifies a process even after the pid is reused.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22; split after the command name, which is in parentheses and may hold spaces.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process() -> dict[str, Any]:
    """The lock record of this process: host, pid, start time (UTC, ISO 8601), command."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": _process_start_ticks(os.getpid()),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([os.path.basename(sys.executable), *sys.argv]),
        "token": uuid.uuid4().hex,
    }


def is_alive(holder: dict[str, Any]) -> bool | None:
    """Whether the holder's process still runs: True, False, or None when it cannot be known
    from here (another host, or a record without a pid)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return None
    pid = holder["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # runs, as another user
        pass
    recorded, current = holder.get("process_start"), _process_start_ticks(pid)
    # A different start time: the pid now belongs to another process.
    return recorded is None or current is None or recorded == current


def describe(holder: dict[str, Any]) -> str:
    """`pid P on host H, started T, command: C` (fields the record lacks are left out)."""
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"]
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    if holder.get("command"):
        parts.append(f"command: {holder['command']}")
    return ", ".join(parts)


def _lock_path(workdir: epath.PathLike) -> epath.Path:
    return epath.Path(paths.resolve(os.fspath(workdir))) / LOCK_FILE


def _read(path: epath.Path) -> tuple[str, dict[str, Any]] | None:
    """(raw text, record) of the lock file; None if there is none. An unreadable record is {}."""
    deadline = time.monotonic() + _PARTIAL_WRITE_WAIT_S
    while True:
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
            if isinstance(record, dict):
                return raw, record
        except ValueError:
            pass
        if time.monotonic() > deadline:
            return raw, {}
        time.sleep(0.05)  # created, not yet written


def holder(workdir: epath.PathLike) -> dict[str, Any] | None:
    """The record of the run holding `workdir` unless the lock is free or stale; {} for a lock
    file that cannot be parsed. A holder on another host counts as holding."""
    found = _read(_lock_path(workdir))
    if found is None or is_alive(found[1]) is False:
        return None
    return found[1]


def _held_message(workdir: str, path: epath.Path, record: dict[str, Any]) -> str:
    if not record:
        return (
            f"{workdir} is locked by {path}, whose content cannot be read. If no run is using "
            f"this workdir, delete {path} and start again; otherwise choose another --workdir."
        )
    if is_alive(record) is None:
        return (
            f"{workdir} is in use by another run: {describe(record)}. It runs on another host, "
            f"so whether it still runs cannot be checked from {socket.gethostname()}: if it has "
            f"stopped, delete {path} and start again; otherwise choose another --workdir."
        )
    return (
        f"{workdir} is in use by another run: {describe(record)}. Wait for it to finish or stop "
        f"it (kill {record['pid']}; it saves a checkpoint and exits), or choose another --workdir."
    )


# ----------------------------------------------------------------------------------------------
# Taking and releasing it.


class WorkdirLock:
    """A held lock; `release()` (or leaving a `with` block) gives it back."""

    def __init__(self, path: epath.Path, record: dict[str, Any]):
        self.path = path
        self.record = record
        self._held = True

    def release(self) -> None:
        """Removes the lock file if it is still this holder's (never another run's)."""
        if not self._held:
            return
        self._held = False
        found = _read(self.path)
        if found is not None and found[1].get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _create_local(path: epath.Path, text: str) -> bool:
    """Creates the lock file holding `text` unless it exists (atomic); whether it did."""
    try:
        fd = os.open(os.fspath(path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as stream:
        stream.write(text)
    return True


def _create_remote(path: epath.Path, text: str) -> bool:
    if path.exists():  # not atomic with the write below: best effort on buckets
        return False
    path.write_text(text)
    return True


def _remove_stale(path: epath.Path, stale_raw: str) -> None:
    """Removes the lock file if it still holds `stale_raw`.

    Locally it is renamed aside first (atomic) and checked, so a lock another trainer created
    after we read the stale one is put back, never removed.
    """
    if paths.is_url(os.fspath(path)):
        path.unlink(missing_ok=True)
        return
    aside = path.parent / f"{LOCK_FILE}.stale-{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # another trainer took it over first
    if aside.read_text() == stale_raw:
        aside.unlink()
    else:
        os.rename(aside, path)


def acquire(workdir: epath.PathLike) -> WorkdirLock:
    """Takes `<workdir>/run.lock` for this process, creating the workdir if needed.

    Raises:
      WorkdirHeldError: a live run (or one on another host) holds it; names it and what to do.
      WorkdirError: the workdir cannot be created or written.
    """
    workdir = paths.resolve(os.fspath(workdir))
    path = _lock_path(workdir)
    remote = paths.is_url(workdir)
    record = this_process()
    text = json.dumps(record, indent=1) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # retried only while stale locks are being taken over
            if (_create_remote if remote else _create_local)(path, text):
                return WorkdirLock(path, record)
            found = _read(path)
            if found is None:
                continue  # released meanwhile
            raw, other = found
            if not other or is_alive(other) is not False:
                raise WorkdirHeldError(_held_message(workdir, path, other))
            logging.warning(
                "taking over %s: the run that held it (%s) is no longer running",
                path,
                describe(other),
            )
            _remove_stale(path, raw)
    except WorkdirHeldError:
        raise
    except OSError as e:
        raise WorkdirError(
            f"Cannot write to {workdir}: {e.strerror or e}. "
            "Choose a --workdir this user can create and write."
        ) from e
    raise WorkdirHeldError(f"{workdir}: other trainers keep taking {path}; try again.")
