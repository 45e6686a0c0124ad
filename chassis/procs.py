"""Process identity: a PID is trusted only together with its start time.

PIDs are reused; before any signal, the recorded start time (field 22 of
/proc/PID/stat, in clock ticks since boot) must still match, so `chassis down`
never hits a stranger's process that took a recycled PID.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time

PR_SET_PDEATHSIG = 1


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    if fields[0] == b"Z":  # a zombie is already dead
        return None
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    return pid > 0 and start_time(pid) == started


def signal_verified(pid: int, started: int, sig: int) -> bool:
    """Signal pid only if it is still the process recorded; True if signalled."""
    if not alive(pid, started):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_verified(records: list[tuple[int, int]], grace: float = 2.0) -> list[tuple[int, int]]:
    """SIGTERM each recorded process, SIGKILL what is left after `grace`; returns survivors."""
    for pid, started in records:
        signal_verified(pid, started, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        signal_verified(pid, started, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = [r for r in records if alive(*r)]
    while left and time.monotonic() < deadline:
        time.sleep(0.02)
        left = [r for r in left if alive(*r)]
    for pid, started in left:
        signal_verified(pid, started, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [r for r in left if alive(*r)]
    return left


def die_with_parent(parent_pid: int) -> None:
    """preexec_fn: SIGKILL this child when its parent dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
