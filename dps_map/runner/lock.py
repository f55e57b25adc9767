"""One writer per run directory: an exclusive lock held for the whole run.

The lock is `fcntl.flock` on `<run dir>/run.lock` (an advisory whole-file lock of the kernel). While it is
held the file names its holder (pid, host, start time); a clean release empties it. The kernel drops
the lock when its holder dies (even by SIGKILL), so a dead holder never blocks a rerun; a holder that
did not release cleanly is reported with a warning when the next run takes the lock over.

Shared filesystems: on NFS, Linux emulates flock with NFS byte-range locks, which every client sees
(NFSv4: a crashed client's lock expires with its lease, ~90 s); with the mount option
`local_lock=flock` it is only visible on one node. On Lustre flock is cluster-wide with the mount
option `flock`, node-local with `localflock`, and refused with `noflock` (the default of some Lustre
versions): then the lock falls back to
an exclusive-create file `run.lock.owner` (O_EXCL, atomic on NFS and Lustre), which a run on the same
host takes over when its holder's pid is dead, and which must be deleted by hand when its holder died
on another host (the error says so).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
OWNER_FILE = "run.lock.owner"  # the fallback where flock is not supported
_held: dict[str, int] = {}     # run dirs this process holds (realpath -> nesting depth)


class RunDirLocked(UserError):
    """Another process is writing to this run directory."""


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _describe(holder: dict | None) -> str:
    if not holder:
        return "a process that is just starting (no holder recorded yet)"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"


def _parse(text: str) -> dict | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # exists but not ours, or unreadable: assume alive
    return True


def locked_message(run_dir, holder: dict | None, hint: str = "") -> str:
    return (f"run dir '{run_dir}' is in use by another dps-map run ({_describe(holder)}): "
            f"wait for it to finish or choose another hydra.run.dir{hint}")


def _locked_error(run_dir: Path, holder: dict | None, hint: str = "") -> RunDirLocked:
    return RunDirLocked(locked_message(run_dir, holder, hint))


def _flock(run_dir: Path):
    """Take the flock (returns the open fd) or raise RunDirLocked; OSError if flock is unsupported.
    Tried 5 times 0.1 s apart: a probe of lock_holder holds a shared lock for a moment."""
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    for attempt in range(5):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == 4:
                text = os.pread(fd, 4096, 0).decode(errors="replace")
                os.close(fd)
                raise _locked_error(run_dir, _parse(text)) from None
            time.sleep(0.1)
        except OSError:
            os.close(fd)
            raise
    previous = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
    if previous:  # a holder that did not release: killed, or its node crashed
        _warn_takeover(run_dir, previous)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
    os.fsync(fd)
    return fd


def _warn_takeover(run_dir: Path, previous: dict) -> None:
    log.warning("run dir %s: taking over the lock of %s, which ended without releasing it (killed?); "
                "finished samples are kept, unfinished ones are redone", run_dir, _describe(previous))


def _owner_file(run_dir: Path) -> None:
    """Fallback lock: create run.lock.owner exclusively; take over a dead holder's on this host."""
    path = run_dir / OWNER_FILE
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = _parse(path.read_text(errors="replace")) if path.exists() else None
            if holder and holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
                _warn_takeover(run_dir, holder)
                path.unlink(missing_ok=True)
                continue
            raise _locked_error(run_dir, holder, f" (if that process is dead, delete '{path}')") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(holder_info()))
            f.flush()
            os.fsync(f.fileno())
        return
    raise _locked_error(run_dir, None, f" (if no run is alive, delete '{path}')")


def usable_dir(run_dir: Path) -> None:
    """Create the run directory if needed; one that is a file, or that this process may not write, raises
    UserError (before anything is written, so nothing in it changes)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise UserError(f"run dir '{run_dir}' is a file (or lies below one: '{err.filename}'), not a directory: "
                        "move the file away or choose another hydra.run.dir") from err
    except PermissionError as err:
        raise UserError(f"cannot create run dir '{run_dir}' ({err.strerror}): choose another hydra.run.dir") from err
    if not os.access(run_dir, os.W_OK):  # read-only: refused before Hydra or the run writes into it
        raise UserError(f"run dir '{run_dir}' is not writable (read-only: nothing in it was changed): make it "
                        "writable (chmod u+w) and rerun to resume, or choose another hydra.run.dir")


@contextmanager
def run_lock(run_dir):
    """Hold the run directory's lock for the duration of the block (created if needed). Raises
    RunDirLocked (one line: the holder's pid, host and start time) if another process holds it.
    Re-entrant within one process (the command line takes it before Hydra writes, the run again)."""
    run_dir = Path(run_dir)
    usable_dir(run_dir)
    key = os.path.realpath(run_dir)
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = None
    try:
        fd = _flock(run_dir)
    except OSError as err:
        if err.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        log.warning("run dir %s: flock is not supported here (%s); using the exclusive file %s instead",
                    run_dir, os.strerror(err.errno), OWNER_FILE)
        _owner_file(run_dir)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        if fd is None:
            (run_dir / OWNER_FILE).unlink(missing_ok=True)
        else:
            os.ftruncate(fd, 0)  # released cleanly: no holder recorded
            os.close(fd)


def lock_holder(run_dir) -> dict | None:
    """The live holder of run_dir's lock ({pid, host, started}), or None if no process holds it.
    Probes without blocking and without writing (for dps_map.runner.sweep_results: is a job still running?)."""
    run_dir = Path(run_dir)
    owner = run_dir / OWNER_FILE
    if owner.exists():
        holder = _parse(owner.read_text(errors="replace")) or {}
        if holder.get("host") != socket.gethostname() or _pid_alive(holder.get("pid")):
            return holder
    path = run_dir / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _parse(os.pread(fd, 4096, 0).decode(errors="replace")) or {}
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the probe's shared lock
    return None
