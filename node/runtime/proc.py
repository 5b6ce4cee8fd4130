"""Reading ``/proc`` for the process runtime: identity, liveness, membership, usage.

A workload is identified by ``(pid, start_ticks)``: the pid of its first process and
that process's start time (field 22 of ``/proc/<pid>/stat``). Every workload is
started in a new session, so its session id equals that pid; the processes it
forks stay in the session unless they call ``setsid`` themselves, which is why
stop and stats act on the session rather than on one pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z, T, X...
    ppid: int
    pgrp: int
    session: int
    cpu_ticks: int  # utime + stime + cutime + cstime
    start_ticks: int
    rss_bytes: int

    @property
    def gone(self) -> bool:
        # A zombie has finished; only its parent's wait() is missing.
        return self.state in ("Z", "X", "x")


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/<pid>/stat``; None when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    close = raw.rfind(")")
    if close < 0:
        return None
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state); field N is fields[N - 3].
    try:
        return ProcStat(
            pid=pid,
            state=fields[0],
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            cpu_ticks=int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14]),
            start_ticks=int(fields[19]),
            rss_bytes=int(fields[21]) * _PAGE_SIZE,
        )
    except (IndexError, ValueError):
        return None


def start_ticks(pid: int) -> int | None:
    st = read_stat(pid)
    return None if st is None else st.start_ticks


def is_same_alive(pid: int, ticks: int | None) -> bool:
    """True while the process ``pid`` started at ``ticks`` runs (zombies count as exited)."""
    st = read_stat(pid)
    if st is None or st.gone:
        return False
    return ticks is None or st.start_ticks == ticks


def session_members(sid: int) -> list[ProcStat]:
    """Every live (non-zombie) process whose session id is ``sid``."""
    members: list[ProcStat] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        st = read_stat(int(entry))
        if st is not None and st.session == sid and not st.gone:
            members.append(st)
    return members


def signal_session(sid: int, sig: signal.Signals) -> int:
    """Send ``sig`` to the process group ``sid`` and to every other member of the session.

    Returns how many live members were found. Signalling the group alone would miss
    members that moved to another group (a shell's job control does that).
    """
    members = session_members(sid)
    if not members:
        # The session is empty, so its number is free for reuse: signal nothing.
        return 0
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, sig)
    for st in members:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(st.pid, sig)
    return len(members)


def cpu_seconds(members: list[ProcStat]) -> float:
    return sum(m.cpu_ticks for m in members) / _CLK_TCK


def rss_bytes(members: list[ProcStat]) -> int:
    return sum(m.rss_bytes for m in members)


def meminfo_total() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (its main thread's), [] when it is gone."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            text = fh.read()
    except OSError:
        return []
    return [int(p) for p in text.split()]
