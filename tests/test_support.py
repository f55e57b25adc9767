"""support.run_with_guard, the tests' way to start a long subprocess: it ends a hung command with everything the command
started (no grandchild goes on using a core), and leaves a working one alone however long it takes."""

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from support import Hung, run_with_guard

# the child starts a grandchild, writes both pids, then both do WHAT: "sleep" (a deadlock: no CPU) or "spin"
FAMILY = """
import os, subprocess, sys, time
what, pids = sys.argv[1], sys.argv[2]
body = "import time\\nwhile True: time.sleep(60)" if what == "sleep" else "while True: pass"
grandchild = subprocess.Popen([sys.executable, "-c", body])
open(pids, "w").write(f"{os.getpid()} {grandchild.pid}")
exec(body)
"""


def alive(pid: int) -> bool:
    """pid runs (a zombie, killed but not yet reaped by its new parent, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pids_of(path: Path) -> list[int]:
    deadline = time.monotonic() + 60
    while not (path.is_file() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [int(p) for p in path.read_text().split()]


def none_alive(pids: list[int]) -> bool:
    """After a moment for the kernel to tear them down: none of pids runs. Those still running are killed here,
    so a broken run_with_guard() fails this test without leaving a process spinning."""
    deadline = time.monotonic() + 10
    while any(map(alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return not survivors


@pytest.mark.parametrize("what, guard", [("sleep", {"idle": 3, "cpu_limit": 600}),
                                         ("spin", {"idle": 600, "cpu_limit": 3})])
def test_a_hung_command_is_ended_with_its_grandchild(what, guard, tmp_path):
    """A deadlock (no CPU for `idle` s) and an endless loop (`cpu_limit` CPU s): Hung names the guard, and neither
    the child nor the grandchild it started is alive afterwards."""
    pids = tmp_path / "pids"
    with pytest.raises(Hung, match="idle" if what == "sleep" else "cpu_limit"):
        run_with_guard([sys.executable, "-c", FAMILY, what, str(pids)], **guard)
    assert none_alive(pids_of(pids))  # the child and the grandchild


def test_a_working_command_runs_to_its_end_and_what_it_left_running_is_ended(tmp_path):
    """A command that works in short spells between pauses runs past `idle` seconds of wall time (only a span
    without any CPU use counts); its output and exit status come back as subprocess.run's; a background process
    it left behind is ended with it."""
    pids = tmp_path / "pids"
    code = ("import subprocess, sys, time\n"
            "left = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            f"open({str(pids)!r}, 'w').write(str(left.pid))\n"
            "end = time.monotonic() + 6\n"
            "while time.monotonic() < end:\n"
            "    spell = time.monotonic() + 0.05\n"
            "    while time.monotonic() < spell: pass\n"
            "    time.sleep(0.5)\n"
            "print('done'); print('warned', file=sys.stderr); sys.exit(3)\n")
    started = time.monotonic()
    proc = run_with_guard([sys.executable, "-c", code], idle=4, cpu_limit=600)
    assert time.monotonic() - started > 6
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "done\n", "warned\n")
    assert none_alive(pids_of(pids))
