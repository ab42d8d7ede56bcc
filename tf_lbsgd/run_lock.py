"""One run per model_dir: a lock file held for the whole run.

    with run_lock.hold(model_dir):
        train_lib.run(model_dir, ...)

Two runs on one model_dir would mix their checkpoints, event files and
metrics.json. The lock is the file `model_dir/.lock`: a JSON record of its
holder (pid, host, user, start time, command line), created atomically
(`O_CREAT | O_EXCL`) and kept open, under an exclusive `fcntl.flock`, for as
long as the run lives. A second run is refused with `ModelDirLocked`, whose
message names the holder. The lock is released (the file removed) when the
`with` block ends, however it ends: normally, by an exception, or by
`KeyboardInterrupt`. Only the chief of a multi-worker job takes it: the
other workers write nothing into model_dir (see `checkpoints`), and they
start and stop with the chief.

Stale locks. A process killed without unwinding (SIGKILL, a crash, SIGTERM
with Python's default action, `os._exit`) leaves the file behind, but the
kernel drops its flock whatever the way it ended. A lock file written on
this host whose flock is free is therefore stale: the next run takes it over
with a warning naming the dead holder. The flock decides, not the pid: a pid
can be reused by another program after the holder is gone. Where the file
system has no flock, the pid is checked instead.

A lock written on another host cannot be checked from here (its pid means
nothing on this host, and flocks are not reliably shared between hosts, e.g.
on NFS): the run is refused with a message saying so, and telling the user
to check on that host and delete the file if the run is gone. So is a lock
file that cannot be read as a holder's record.

`ModelDirLocked` is a `RuntimeError`: the value of model_dir is fine, the
state of the file system is what refuses the run (and the CLI's handling of
bad settings, `ValueError`, does not apply to it).

The module does not import TensorFlow: the CLI can take the lock first.
"""

import contextlib
import datetime
import errno
import fcntl
import getpass
import json
import os
import shlex
import socket
import sys
import time

from absl import logging

LOCK_FILE = ".lock"

# While the lock file is being created or taken over it may be empty or
# about to change: inspect it again, this many times, this far apart.
_ATTEMPTS = 20
_RETRY_SECONDS = 0.05


class ModelDirLocked(RuntimeError):
    """model_dir is locked by another run, or by an unreadable lock file."""


class _Changed(Exception):
    """The lock file changed while it was being inspected: look again."""


def warn(message):
    """Tells the user: an absl warning and a line on stderr."""
    logging.warning(message)
    print(f"tf-lbsgd: warning: {message}", file=sys.stderr, flush=True)


def _record():
    """This process, as the lock file describes its holder."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # No name for this uid (e.g. a container).
        user = str(os.getuid())
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": user,
        "started": datetime.datetime.now().astimezone().isoformat(
            timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
    }


def _describe(holder):
    """`pid 123 on host h (user u), started <time>: <command>`."""
    return (f"pid {holder.get('pid')} on host {holder.get('host')} (user "
            f"{holder.get('user')}), started {holder.get('started')}: "
            f"{holder.get('command')}")


def _flock(fd, blocking=False):
    """Takes the exclusive flock of `fd`.

    Returns:
        True if taken, False if another open file holds it, None if the
        file system does not support flock.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    return True


def _write(fd, record):
    os.write(fd, json.dumps(record, indent=1).encode() + b"\n")
    os.fsync(fd)


def _same_file(fd, path):
    """Whether `path` still names the file open as `fd`."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _pid_alive(pid):
    """Whether a process `pid` exists on this host (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _parse(text):
    """The holder's record in a lock file's text, or None if it is not
    one."""
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
        return None
    return holder


class RunLock:
    """A held lock on model_dir (from `acquire` or `hold`).

    Attributes:
        path: the lock file.
        holder: the record written in it (this process).
    """

    def __init__(self, path, fd, holder):
        self.path = path
        self.holder = holder
        self._fd = fd

    @property
    def held(self):
        """Whether this process still holds the lock."""
        return self._fd is not None

    def release(self):
        """Removes the lock file and drops the flock (again: no-op)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                os.unlink(self.path)
        finally:
            os.close(self._fd)
            self._fd = None


def _create(path, record):
    """Creates the lock file, flocked and written; None if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    # Blocking: a run inspecting the new, empty file holds it only briefly.
    _flock(fd, blocking=True)
    _write(fd, record)
    return fd


def _replace(path, record):
    """Atomically puts a new lock file, flocked and written, at `path`."""
    temporary = f"{path}.{record['host']}.{record['pid']}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    _flock(fd)
    _write(fd, record)
    os.rename(temporary, path)
    return fd


def _unreadable_message(path, text, flocked):
    model_dir = os.path.dirname(path)
    shown = text if len(text) <= 80 else text[:77] + "..."
    held = (" A live process holds its flock." if flocked is False else "")
    return (f"the lock file {path} is not a lock of tf-lbsgd (its content "
            f"is {shown!r}), so whether a run uses {model_dir} is unknown."
            f"{held} If no run uses {model_dir}, delete {path} and try again")


def _other_host_message(path, holder):
    host, pid = holder.get("host"), holder.get("pid")
    return (f"{os.path.dirname(path)} is locked by another run, "
            f"{_describe(holder)}. This host ({socket.gethostname()}) "
            f"cannot tell whether that process still runs: check on {host} "
            f"(e.g. `ps -p {pid}`), and if it is gone, delete {path} and try "
            f"again")


def _stale_holder(fd, path, record, last):
    """The record in the lock file open as `fd`, if its holder is gone.

    Raises:
        ModelDirLocked: if a live run holds it, or that cannot be told.
        _Changed: if the file is changing (and `last` is False).
    """
    flocked = _flock(fd)
    if not _same_file(fd, path):  # Released or taken over meanwhile.
        raise _Changed()
    text = os.read(fd, 1 << 16).decode(errors="replace")
    holder = _parse(text)
    same_host = holder and holder.get("host") == record["host"]
    # A run writes the file only under its flock, right after creating it
    # (empty until then), and takes a stale one over under the old file's
    # flock: look again rather than misjudge those moments.
    being_written = holder is None and (flocked is not True or not text)
    taken_over = (flocked is False and same_host
                  and not _pid_alive(holder["pid"]))
    if (being_written or taken_over) and not last:
        raise _Changed()
    model_dir = os.path.dirname(path)
    if holder is None:
        raise ModelDirLocked(_unreadable_message(path, text, flocked))
    if not same_host:
        raise ModelDirLocked(_other_host_message(path, holder))
    if taken_over:  # Still, after all attempts.
        raise ModelDirLocked(
            f"{model_dir} is locked by {_describe(holder)}; that pid is gone, "
            f"but another process (a child of it?) still holds the lock "
            f"file open: find it with `fuser {path}`, stop it, and try again")
    if flocked is False or (flocked is None and _pid_alive(holder["pid"])):
        raise ModelDirLocked(
            f"{model_dir} is in use by another run: {_describe(holder)}. "
            f"Wait for it to end or stop it, or use another model_dir")
    return holder


def _take_over_if_stale(path, record, log, last):
    """Takes over the existing lock file if its holder is gone.

    Returns:
        The new `RunLock`.

    Raises:
        ModelDirLocked: if a live run holds it, or that cannot be told.
        _Changed: if the file changed meanwhile (and `last` is False).
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:  # Released meanwhile.
        raise _Changed() from None
    try:  # Replaced while this process holds the old file's flock.
        holder = _stale_holder(fd, path, record, last)
        new_fd = _replace(path, record)
    finally:
        os.close(fd)
    reused = (f" (pid {holder['pid']} now belongs to another process)"
              if _pid_alive(holder["pid"]) else "")
    log(f"took over the stale lock {path} of a run that is gone{reused}: "
        f"{_describe(holder)}")
    return RunLock(path, new_fd, record)


def acquire(model_dir, log=warn):
    """Locks `model_dir` (created if needed) for this process.

    Args:
        model_dir: a local directory.
        log: called with the warning when a stale lock is taken over.

    Returns:
        The held `RunLock`; call its `release()` when the run ends (or use
        `hold`).

    Raises:
        ModelDirLocked: if another live run holds model_dir (the message
            names its pid, host, user, start time and command line), if the
            holder is on another host (its liveness cannot be checked), or
            if the lock file is not readable as a holder's record.
    """
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, LOCK_FILE)
    record = _record()
    for attempt in range(_ATTEMPTS):
        if attempt:
            time.sleep(_RETRY_SECONDS)
        fd = _create(path, record)
        if fd is not None:
            return RunLock(path, fd, record)
        try:
            return _take_over_if_stale(path, record, log,
                                       last=attempt == _ATTEMPTS - 1)
        except _Changed:
            continue
    raise ModelDirLocked(
        f"the lock file {path} kept changing for "
        f"{_ATTEMPTS * _RETRY_SECONDS:.0f} s: other runs are starting on "
        f"{model_dir}; start one run per model_dir")


@contextlib.contextmanager
def hold(model_dir, log=warn):
    """Holds the lock on `model_dir` for the `with` block.

    A model_dir that is not a local path (e.g. `gs://...`) cannot be locked
    this way: a warning says so and the block runs unlocked (yields None).

    Args:
        model_dir: the run's directory.
        log: called with warnings (stale lock taken over, remote dir).

    Yields:
        The held `RunLock` (or None for a remote model_dir).

    Raises:
        ModelDirLocked: see `acquire`.
    """
    model_dir = os.fspath(model_dir)
    if "://" in model_dir:
        log(f"{model_dir} is not a local directory: it is not locked against "
            f"a second run; start one run per model_dir")
        yield None
        return
    lock = acquire(model_dir, log)
    try:
        yield lock
    finally:
        lock.release()
