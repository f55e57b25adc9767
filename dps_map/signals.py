"""Stopping between writes: SIGINT, SIGTERM and SIGUSR2 (SLURM's warning before the time limit) raise
Interrupted, but a signal that arrives inside a write section takes effect when the section ends, so no
file is left half written. A leaf module (imports nothing of ours); io.py's writes run in write sections."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGUSR2 arrived; raised between writes, never inside one."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


#: SIGUSR2: SLURM's warning before the time limit (`--signal=USR2@120`, as submitit asks for)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
_writing = 0          # depth of nested write sections
_pending: int | None = None  # a signal that arrived during a write
_previous: dict = {}  # the handlers stop_on_signals replaced


def _on_signal(signum, frame) -> None:
    global _pending
    if _writing:
        _pending = signum
    else:
        _stop(signum)


def _stop(signum: int) -> None:
    """Stop now (between writes). On SIGUSR2 a handler installed before ours (submitit's, in a
    hydra/launcher=slurm job: it requeues the job and exits) runs first; otherwise Interrupted."""
    previous = _previous.get(signum)
    if signum == signal.SIGUSR2 and callable(previous):
        previous(signum, None)
    raise Interrupted(signum)


@contextmanager
def stop_on_signals():
    """Within this block SIGINT/SIGTERM/SIGUSR2 raise Interrupted, but only outside write sections (a
    signal during a write takes effect when it ends). Main thread only; a no-op elsewhere."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _on_signal) for sig in STOP_SIGNALS}
    _previous.update(old)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
            _previous.pop(sig, None)


@contextmanager
def write_section():
    """Writes in here finish even if SIGINT/SIGTERM/SIGUSR2 arrives (see stop_on_signals)."""
    global _writing, _pending
    _writing += 1
    try:
        yield
    finally:
        _writing -= 1
        if not _writing and _pending is not None:
            signum, _pending = _pending, None
            _stop(signum)
