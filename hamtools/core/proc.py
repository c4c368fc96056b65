"""Processes: spawn, watch (pidfd), identify, decode wait status, kill a tree, daemonize.

Identity: a pid alone is a name the kernel recycles. A process is identified by (pid, start
time), the start time being field 22 of /proc/PID/stat (clock ticks since boot), and every
signal goes through a pidfd opened while that identity was verified, so a recycled pid can
never make us signal a stranger.

Traps handled here (linux_primitives.md):
  * os.waitid(P_PIDFD) works only for our children; a non-child gives ECHILD, so for those
    the pidfd turning readable is all we learn (no exit status).
  * a pidfd is readable at exit, not at reaping; pidfd_send_signal still succeeds on a zombie.
  * Python 3.11 has no os.PIDFD_NONBLOCK: readiness is asked with poll(), never a blocking wait.
  * children inherit the blocked signal mask and ignored dispositions (Python ignores SIGPIPE
    and SIGXFSZ): spawn() resets both.
"""

import _signal as signal  # the C module: the stdlib's signal wraps it in enums (see cjson)
import errno
import os
import select

from hamtools.core import fdlimit, libc

# Every signal a child may get back to its default action (SIGKILL/SIGSTOP cannot be changed).
_DEFAULT_SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))

_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3
_PR_SET_CHILD_SUBREAPER = 36


# -- identity -----------------------------------------------------------------------------

def _stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (state) on, or None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2:].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when there is no such pid."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])  # field 22 overall


def lineage(pid: int) -> tuple[int, int, int] | None:
    """(start time, parent pid, process group) of pid, or None when there is no such pid."""
    fields = _stat(pid)
    return None if fields is None else (int(fields[19]), int(fields[1]), int(fields[2]))


def parent(pid: int) -> int:
    """The parent's pid (0 when pid is gone)."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0
    return 0 if fields is None else int(fields[1])


def is_descendant(pid: int, ancestor: int | None, depth: int = 64) -> bool:
    """True when pid is ancestor or below it (looking up at most depth generations)."""
    for _ in range(depth):
        if ancestor is None or pid <= 1:
            return False
        if pid == ancestor:
            return True
        pid = parent(pid)
    return False


# Tuples with named fields, not dataclasses or namedtuple: those import modules (inspect,
# collections) worth megabytes of resident size in a daemon that is budgeted against a bare
# pidfd loop.
class ProcessId(tuple):
    """A process as (pid, start time): stays unique when the pid is recycled."""

    __slots__ = ()

    def __new__(cls, pid: int, start: int):
        return tuple.__new__(cls, (pid, start))

    pid = property(lambda self: self[0])
    start = property(lambda self: self[1])

    def __repr__(self) -> str:
        return f"ProcessId(pid={self[0]}, start={self[1]})"

    @classmethod
    def of(cls, pid: int) -> "ProcessId | None":
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        """True while this very process exists (a zombie still counts)."""
        return start_time(self.pid) == self.start

    def zombie(self) -> bool:
        """This very process has exited and waits for its parent to reap it."""
        fields = _stat(self.pid)
        return fields is not None and int(fields[19]) == self.start and fields[0] in (b"Z", b"X")


# -- exit status --------------------------------------------------------------------------

class ExitStatus(tuple):
    """How a process ended: code for a normal exit, signal (and core) for a kill."""

    __slots__ = ()

    def __new__(cls, code: int | None = None, signal: int | None = None, core: bool = False):
        return tuple.__new__(cls, (code, signal, core))

    code = property(lambda self: self[0])
    signal = property(lambda self: self[1])
    core = property(lambda self: self[2])

    def __repr__(self) -> str:
        return f"ExitStatus(code={self[0]}, signal={self[1]}, core={self[2]})"

    @classmethod
    def from_waitid(cls, result: os.waitid_result) -> "ExitStatus":
        if result.si_code == _CLD_EXITED:
            return cls(code=result.si_status)
        return cls(signal=result.si_status, core=result.si_code == _CLD_DUMPED)

    @classmethod
    def from_wait_status(cls, status: int) -> "ExitStatus":
        """Decode a waitpid() status word."""
        if os.WIFEXITED(status):
            return cls(code=os.WEXITSTATUS(status))
        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status), core=os.WCOREDUMP(status))
        raise ValueError(f"not a termination status: {status:#x}")

    @property
    def returncode(self) -> int:
        """subprocess's convention: the exit code, or minus the signal number."""
        return self.code if self.code is not None else -self.signal

    @property
    def success(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        if self.code is not None:
            return f"exited {self.code}"
        text = f"killed by {signal_name(self.signal)}"
        return text + " (core dumped)" if self.core else text


# Aliases that signal.Signals never reports as a signal's name.
_SIGNAL_NAMES = {value: name for name, value in vars(signal).items()
                 if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(value, int)
                 and name not in ("SIGIOT", "SIGPOLL", "SIGCLD")}


def signal_name(signum: int) -> str:
    return _SIGNAL_NAMES.get(signum, f"signal {signum}")


# -- watching any process -----------------------------------------------------------------

class Process:
    """A process held by a pidfd: poll it in an event loop (readable = exited), signal it.

    Works for any pid; `child=True` (set by spawn) also allows wait() for the exit status.
    """

    def __init__(self, ident: ProcessId, pidfd: int, *, child: bool = False):
        self.ident = ident
        self.pidfd = pidfd
        self.child = child
        self.status: ExitStatus | None = None

    @property
    def pid(self) -> int:
        return self.ident.pid

    @classmethod
    def open(cls, pid: int, *, child: bool = False, expect: ProcessId | None = None) -> "Process":
        """Hold the process now called pid (or, with expect, only that very process).

        Raises ProcessLookupError when it does not exist (or is not `expect` any more).
        """
        if pid <= 0:
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}")
        before = expect or ProcessId.of(pid)
        if before is None:
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}")
        pidfd = os.pidfd_open(pid)  # ProcessLookupError when gone
        # The start time read again *after* the pidfd exists proves the pidfd holds the
        # process we identified, not a newcomer that took the pid in between.
        if start_time(pid) != before.start:
            os.close(pidfd)
            raise ProcessLookupError(errno.ESRCH, f"process {pid} is gone (pid reused)")
        return cls(before, pidfd, child=child)

    @classmethod
    def from_pidfd(cls, pidfd: int) -> "Process":
        """Adopt a pidfd made elsewhere (SO_PEERPIDFD, a passed fd). Check exited() first:
        the process may already be gone, and then its identity is unknown (start 0)."""
        pid = pidfd_pid(pidfd)
        start = start_time(pid) if pid > 0 else None
        proc = cls(ProcessId(pid, start or 0), pidfd)
        # Read while the pidfd was not yet readable, the start time is the holder's own.
        if start is None or proc.exited():
            proc.ident = ProcessId(pid, 0)
        return proc

    def fileno(self) -> int:
        return self.pidfd

    def exited(self) -> bool:
        """True once the process has exited (zombie or reaped). Never blocks."""
        if self.status is not None:
            return True
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(0))

    def send_signal(self, signum: int) -> bool:
        """Signal this very process; False when it has already exited."""
        if self.pidfd < 0 or self.status is not None:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, signum)
        except ProcessLookupError:
            return False
        return True

    def wait(self, *, block: bool = False) -> ExitStatus | None:
        """Reap a child and return its status (None while it runs and block is False)."""
        if self.status is not None:
            return self.status
        if not self.child:
            raise ChildProcessError(errno.ECHILD, f"process {self.pid} is not our child")
        flags = os.WEXITED | (0 if block else os.WNOHANG)
        result = os.waitid(os.P_PIDFD, self.pidfd, flags)
        if result is None:
            return None
        self.status = ExitStatus.from_waitid(result)
        return self.status

    def close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __repr__(self) -> str:
        return f"<Process {self.pid} start={self.ident.start}{' child' if self.child else ''}>"


def pidfd_pid(pidfd: int) -> int:
    """The pid a pidfd refers to (-1 once reaped, 0 in another pid namespace)."""
    with open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    return -1


# -- spawning -----------------------------------------------------------------------------

def spawn(argv: list[str], *, env: dict[str, str] | None = None, shell: bool = False,
          new_group: bool = True, file_actions=(), scheduler=None,
          keep_oom_protection: bool = False, keep_ignored=(), blocked=()) -> Process:
    """Start argv with posix_spawn and hold it by pidfd.

    The child gets an empty signal mask and default dispositions for every signal; a shell
    only when asked (argv is then one command string for /bin/sh -c). With new_group the
    child leads its own process group, so kill_tree() reaches whatever it starts.
    file_actions and scheduler go to os.posix_spawn as they are (redirections; a policy).
    The child gets the default OOM score back unless keep_oom_protection (ham's guardian),
    which is also born ignoring keep_ignored (as we do) and with blocked blocked, so that no
    signal can end it before its handlers are in place.
    Raises OSError (FileNotFoundError, PermissionError…) when the program cannot run.
    """
    if shell:
        if len(argv) != 1:
            raise ValueError("shell=True takes one command string")
        argv = ["/bin/sh", "-c", argv[0]]
    if not argv:
        raise ValueError("nothing to run")
    launch = os.posix_spawn if "/" in argv[0] else os.posix_spawnp
    kwargs = {"setsigmask": blocked, "setsigdef": tuple(s for s in _DEFAULT_SIGNALS if s not in keep_ignored),
              "file_actions": file_actions}
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    if new_group:
        kwargs["setpgroup"] = 0
    pid = fdlimit.as_given(launch, argv[0], argv, os.environ if env is None else env, **kwargs)
    if not keep_oom_protection:
        drop_oom_protection(pid)
    # Our child cannot be reaped before we wait for it, so the pid is still ours here.
    return Process(ProcessId(pid, start_time(pid) or 0), os.pidfd_open(pid), child=True)


_oom_protected = None  # our own oom_score_adj is below 0 (ham sets -1000), read once


def drop_oom_protection(pid: int) -> None:
    """A child inherits our oom_score_adj: give it back the default (0) if ours is lowered,
    so a runaway service is not shielded from the OOM killer as ham is."""
    global _oom_protected
    if _oom_protected is None:
        try:
            with open("/proc/self/oom_score_adj") as adj:
                _oom_protected = int(adj.read()) < 0
        except (OSError, ValueError):
            _oom_protected = False
    if _oom_protected:
        try:
            with open(f"/proc/{pid}/oom_score_adj", "w") as adj:
                adj.write("0")
        except OSError:
            pass


# -- process trees ------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Direct children of pid, from /proc/PID/task/*/children."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found.extend(int(word) for word in listing.read().split())
        except FileNotFoundError:
            continue
    return found


def descendants(pid: int) -> list[ProcessId]:
    """Every living descendant of pid, parents before children, each with its identity."""
    result: list[ProcessId] = []
    queue = [pid]
    seen = {pid}
    while queue:
        for kid in children(queue.pop(0)):
            if kid in seen:
                continue
            seen.add(kid)
            ident = ProcessId.of(kid)
            if ident is not None:
                result.append(ident)
                queue.append(kid)
    return result


def signal_identity(ident: ProcessId, signum: int) -> bool:
    """Signal exactly this process (never a recycled pid); False when it is gone."""
    try:
        held = Process.open(ident.pid, expect=ident)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return held.send_signal(signum)
    finally:
        held.close()


def kill_tree(proc: Process, signum: int) -> int:
    """Signal proc, its process group when it leads one, and all its descendants.

    Descendants are found (and identified) before anything is signalled, so none escapes by
    being reparented. Returns how many processes were signalled (the group counts once).
    """
    family = descendants(proc.pid)
    count = 0
    if proc.send_signal(signum):
        count += 1
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
    for ident in family:
        count += signal_identity(ident, signum)
    return count


def escalate(loop, proc: Process, *, signum: int = signal.SIGTERM, grace: float = 5.0):
    """Send signum to proc's tree now and SIGKILL it after grace seconds unless it exited.

    Returns the loop Timer; cancel it once the process is seen gone.
    """
    kill_tree(proc, signum)

    def hard_kill() -> None:
        if not proc.exited():
            kill_tree(proc, signal.SIGKILL)

    return loop.call_later(grace, hard_kill)


# -- reaping and daemons ------------------------------------------------------------------

def set_child_subreaper(on: bool = True) -> None:
    """Orphans of our descendants are reparented to us (we must reap them: reap_all)."""
    if libc.call("prctl", _PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_CHILD_SUBREAPER) failed")


def reap_all() -> list[tuple[int, ExitStatus]]:
    """Reap every child that has exited (SIGCHLD merges, so always loop); never blocks."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        reaped.append((pid, ExitStatus.from_wait_status(status)))
    return reaped


def daemonize() -> None:
    """Detach the classic way: fork, setsid, fork; cwd /; stdio on /dev/null.

    Returns in the daemon only; the original process exits 0 at once.
    """
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
