"""The guardian (QNX ham's Guardian, reference §1.2): a small process that ham starts and
that becomes ham when ham dies.

It is a second, bare interpreter (no site, none of ham's modules: about 3 MB of its own) that
waits on two things: a pidfd of ham, and a pipe from ham. "S" on the pipe means ham is
leaving on purpose (`hamctl stop`, SIGTERM, `hamctl reexec`): the guardian exits. ham's
death without it: the guardian execs ham's own command line with HAM_HANDOVER (hamd.handover)
naming the fds it inherited from ham at its start — ham.lock, the listening sockets, the
notify socket, the watchdog — so it becomes ham in the same place, with nothing closed, and
resumes from the persisted state. The new ham starts a new guardian; ham starts a new one
whenever its guardian dies.

What Linux takes away in a takeover: the dead ham's children are given by the kernel to the
nearest subreaper above ham (init, or systemd), not to the guardian, so the new ham watches
them by pidfd and learns how they ended from the kernel's process connector (core.procexit)
where it may open it (root, the initial network namespace); elsewhere their exit status is
gone (a death of theirs cannot be told abnormal). What the new ham starts
is its own child again. `hamctl reexec` keeps the pid, so nothing is lost there.

The guardian ignores the signals ham ignores and passes SIGTERM and SIGHUP on to ham, so a
shutdown's killall or an administrator's kill of the wrong pid still means what it says.
"""

import os
import sys
import _signal

# Run by `python -S -c`: sys.argv is then ["-c", ROOT, HAM_PID, PIPE_FD, "--", COMMAND...].
BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from hamtools.hamd.guardian import watch; watch()")
STOP = b"S"
NAME = b"ham-guardian"
IGNORED = (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGPIPE, _signal.SIGUSR1, _signal.SIGUSR2,
           _signal.SIGALRM)
FORWARDED = (_signal.SIGTERM, _signal.SIGHUP)


def watch() -> None:
    """The guardian's whole life."""
    import select

    ham_pid, pipe = int(sys.argv[1]), int(sys.argv[2])
    command = sys.argv[4:]
    os.set_inheritable(pipe, False)
    os.set_blocking(pipe, False)  # a forked child of ham may hold the write end a moment
    _rename(NAME)
    _protect()
    for signum in IGNORED:
        _signal.signal(signum, _signal.SIG_IGN)
    for signum in FORWARDED:  # blocked since birth: none is lost, none kills us meanwhile
        _signal.signal(signum, lambda n, _frame: _forward(ham_pid, n))
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, FORWARDED)
    try:
        pidfd = os.pidfd_open(ham_pid)
    except ProcessLookupError:
        pidfd = None
    if pidfd is None or os.getppid() != ham_pid:  # ham died before we could watch it
        _take_over(command, pipe)
    poller = select.epoll()
    poller.register(pipe, select.EPOLLIN)
    poller.register(pidfd, select.EPOLLIN)
    while True:
        ready = {fd for fd, _ in poller.poll()}
        if pipe in ready:  # read first: ham says "stop" before it exits on purpose
            said = os.read(pipe, 16)
            if STOP in said:
                sys.exit(0)
            if not said:
                poller.unregister(pipe)  # ham's end closed: it is exiting; the pidfd says when
        if pidfd in ready:
            _take_over(command, pipe)


def _take_over(command: list[str], pipe: int) -> None:
    try:
        if STOP in os.read(pipe, 16):  # ham said it before dying
            sys.exit(0)
    except OSError:  # nothing written (EAGAIN)
        pass
    try:
        os.execv(command[0], command)
    except OSError as err:
        os.write(2, f"ham-guardian: cannot take over: {command[0]}: {err.strerror}\n".encode())
        sys.exit(1)


def _forward(ham_pid: int, signum: int) -> None:
    try:
        os.kill(ham_pid, signum)
    except OSError:
        pass


def _rename(name: bytes) -> None:
    try:
        with open("/proc/self/comm", "wb") as comm:  # ps, pgrep: without ctypes' prctl
            comm.write(name)
    except OSError:
        pass


def _protect() -> None:
    """The guardian is ham-to-be: the OOM killer spares it as it spares ham (root only)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("-1000")
    except OSError:
        pass


class Guardian:
    """ham's side: start the guardian, start a new one when it dies, stop it first when ham
    leaves on purpose."""

    RESTART_DELAYS = (0, 0.1, 0.5, 1, 5, 30)  # after quick deaths in a row: a broken
    QUICK = 5.0  # interpreter or zipapp must not make ham spin

    def __init__(self, ham, command: list[str]):
        self.ham = ham
        self.command = command  # what the guardian execs to become ham
        self.pid = None
        self._pipe = None
        self._pidfd = None
        self._started = 0.0
        self._quick_deaths = 0
        self._timer = None
        self.stopped = False

    def start(self) -> None:
        self._timer = None
        if self.stopped:
            return
        from hamtools.core import proc, relaunch
        from hamtools.hamd.handover import Handover

        fds = self.ham.handover_fds()
        read_end, write_end = os.pipe()
        env = dict(os.environ, **self.ham.manager_environment())
        env["HAM_HANDOVER"] = Handover("takeover", os.getpid(), fds).encode()
        flags = [f for f in relaunch.interpreter_flags() if f != "-S"]
        argv = [sys.executable, *flags, "-S", "-c", BOOT, relaunch.package_root(),
                str(os.getpid()), str(read_end), "--", *self.command]
        keep = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in (*fds.values(), read_end)]
        try:
            started = proc.spawn(argv, env=env, file_actions=keep, keep_oom_protection=True,
                                 keep_ignored=IGNORED, blocked=FORWARDED)
        except OSError as err:
            os.close(write_end)
            self.ham.log(0, f"cannot start the guardian: {err.strerror}")
            self._later()
            return
        finally:
            os.close(read_end)
        self.pid, self._pidfd, self._pipe = started.pid, started.pidfd, write_end
        self._started = self.ham.clock.monotonic()
        self.ham.log(2, f"guardian started, pid {self.pid}")

    @classmethod
    def kept(cls, ham, pid: int, pipe: int) -> "Guardian | None":
        """The guardian a re-exec kept running (still our child: the pid is the same)."""
        guardian = cls(ham, [])
        try:
            os.set_inheritable(pipe, False)
            guardian._pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        guardian.pid, guardian._pipe = pid, pipe
        return guardian

    def handover(self) -> tuple[int, int] | None:
        """(pid, pipe) for a re-exec to keep, the pipe made inheritable."""
        if self.pid is None:
            return None
        os.set_inheritable(self._pipe, True)
        return self.pid, self._pipe

    def owns(self, pid: int) -> bool:
        return pid == self.pid

    def exited(self, status) -> None:
        """Our guardian died (reaped by ham's SIGCHLD handler): start another."""
        self._forget()
        if self.stopped:
            return
        lived = self.ham.clock.monotonic() - self._started
        self._quick_deaths = self._quick_deaths + 1 if lived < self.QUICK else 0
        self.ham.guardian_failures += 1
        self.ham.changed()
        self.ham.log(0, f"guardian died ({status}): starting a new one")
        self._later()

    def _later(self) -> None:
        delay = self.RESTART_DELAYS[min(self._quick_deaths, len(self.RESTART_DELAYS) - 1)]
        self._timer = self.ham.loop.call_later(delay, self.start)

    def stop(self, wait: float = 2.0) -> None:
        """Tell the guardian ham leaves on purpose, and wait (a little) until it has gone."""
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pid is None:
            return
        try:
            os.write(self._pipe, STOP)
        except OSError:
            pass
        import select

        poller = select.epoll()
        try:
            poller.register(self._pidfd, select.EPOLLIN)
            if poller.poll(wait):
                os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass  # already reaped
        finally:
            poller.close()
        self._forget()

    def _forget(self) -> None:
        for fd in (self._pipe, self._pidfd):
            if fd is not None:
                os.close(fd)
        self.pid = self._pipe = self._pidfd = None
