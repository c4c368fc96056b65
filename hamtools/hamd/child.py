"""A service's process: started with every attribute of its spec, stopped with escalation.

start() uses posix_spawn (hamtools.core.proc.spawn: fast, where a fork would copy all of ham)
unless the spec asks for something posix_spawn cannot do — a uid or gid (even ham's own: the
groups must be that user's), cwd, umask,
rlimits, nice, CPU affinity, a cgroup — and then fork+exec through subprocess.Popen with a
preexec_fn (safe: ham is single-threaded). In the child, before exec, in this order, because
each step may need a privilege a later one drops: join the cgroup, rlimits, nice, scheduling,
CPU affinity, umask, cwd, supplementary groups (the user's own, or none for a gid alone;
never ham's), gid, uid last.

Either way the child gets the descriptor limit ham was given, not the one ham raised for itself
(core.fdlimit), leads its own process group, has an empty signal mask and default
dispositions for every signal, ham's environment + the spec's env + extra_env +
HAM_ENTITY=<name>, and stdout/stderr as given (hamtools.hamd.capture makes them). ham reaps
every child itself (waitpid(-1) on SIGCHLD), so Popen is told it never created one.

A failure before exec (a bad cwd, setuid refused, a missing program) is one OSError in the
parent, "<step>: <reason>", and no process is left behind.
"""

import errno
import os
import pwd
import signal

from hamtools.core import fdlimit, proc
from hamtools.hamd import cgroup

_POLICIES = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE,
             "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}
_POSIX_POLICIES = (os.SCHED_OTHER, os.SCHED_FIFO, os.SCHED_RR)
# Every signal a child may get back to its default action (SIGKILL/SIGSTOP cannot be changed).
_SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))
_hierarchy: cgroup.Hierarchy | None = None


def start(spec: dict, extra_env: dict, log, *, stdout: int | None = None,
          stderr: int | None = None, cgroups: cgroup.Hierarchy | None = None) -> int:
    """Start spec's process; returns its pid. stdout/stderr: fds for the child (None: ham's).

    log(level, message) is ham's activity log; cgroups defaults to the one ham-wide hierarchy.
    """
    argv = spec["argv"]
    env = dict(os.environ)
    env.update(spec.get("env") or {})
    env.update(extra_env)
    env["HAM_ENTITY"] = spec["name"]
    sched = _scheduler(spec.get("sched"))
    group = None
    if spec.get("cgroup"):
        group = (cgroups or _default_hierarchy(log)).prepare(spec["name"], spec["cgroup"])
    steps = _steps(spec, group, sched)
    # posix_spawn sets a POSIX policy (glibc refuses batch and idle), and nothing else here
    if len(steps) == (sched is not None and sched[0] in _POSIX_POLICIES):
        return _spawn(argv, env, stdout, stderr, sched)
    return _fork_exec(argv, env, stdout, stderr, steps, log, spec["name"])


def _default_hierarchy(log) -> cgroup.Hierarchy:
    global _hierarchy
    if _hierarchy is None:
        _hierarchy = cgroup.Hierarchy(log)
    return _hierarchy


def _scheduler(sched: dict | None) -> tuple | None:
    if not sched:
        return None
    try:
        policy = _POLICIES[sched["policy"]]
    except KeyError:
        raise ValueError(f"unknown scheduling policy {sched['policy']!r}") from None
    return policy, os.sched_param(sched.get("priority", 0))


def _steps(spec: dict, group: str | None, sched: tuple | None) -> list:
    """What the child must do before exec, in order, as (what, fatal, call)."""
    steps = []
    if group is not None:
        steps.append((f"join cgroup {group}", False,
                      lambda: _write_self(os.path.join(group, "cgroup.procs"))))
    for name, (soft, hard) in (spec.get("rlimits") or {}).items():
        steps.append(_rlimit_step(name, soft, hard))
    nice = spec.get("nice")
    if nice is not None:
        steps.append((f"nice {nice}", True, lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)))
    if sched is not None:
        steps.append((f"scheduling {spec['sched']['policy']}", True,
                      lambda: os.sched_setscheduler(0, *sched)))
    cpus = spec.get("cpus")
    if cpus:
        steps.append((f"CPU affinity {cpus}", True, lambda: os.sched_setaffinity(0, cpus)))
    umask = spec.get("umask")
    if umask is not None:
        steps.append((f"umask {umask:04o}", True, lambda: os.umask(umask)))
    cwd = spec.get("cwd")
    if cwd:
        steps.append((f"cwd {cwd}", True, lambda: os.chdir(cwd)))
    steps.extend(_identity_steps(spec.get("uid"), spec.get("gid")))
    return steps


def _rlimit_step(name: str, soft, hard) -> tuple:
    import resource  # only for services with limits

    try:
        which = getattr(resource, "RLIMIT_" + name.upper())
    except AttributeError:
        raise ValueError(f"unknown rlimit {name!r}") from None
    limits = tuple(resource.RLIM_INFINITY if v is None else v for v in (soft, hard))
    return f"rlimit {name} {soft}:{hard}", True, lambda: resource.setrlimit(which, limits)


def _identity_steps(uid: int | None, gid: int | None) -> list:
    """setgroups, setgid, setuid to the service's identity, whatever ham's own: a user's
    supplementary groups are that user's (a bare uid has none), a gid alone comes with none;
    ham's never leak, even to a service running as ham's uid. A step that would change
    nothing is left out only when ham is not root (it could not take it), so such a ham can
    still run a service as itself."""
    if uid is None and gid is None:
        return []
    groups: list[int] = []
    if uid is not None:
        try:
            user = pwd.getpwuid(uid)
        except KeyError:  # a bare number: no groups of its own; its group is its number
            gid = uid if gid is None else gid
        else:
            gid = user.pw_gid if gid is None else gid
            groups = os.getgrouplist(user.pw_name, gid)
    root = os.geteuid() == 0
    steps = []
    if root or sorted(set(os.getgroups())) != sorted(set(groups)):
        steps.append((f"setgroups {groups}", True, lambda: os.setgroups(groups)))
    if root or os.getresgid() != (gid, gid, gid):
        steps.append((f"setgid {gid}", True, lambda: os.setresgid(gid, gid, gid)))
    if uid is not None and (root or os.getresuid() != (uid, uid, uid)):
        steps.append((f"setuid {uid}", True, lambda: os.setresuid(uid, uid, uid)))
    return steps


def _write_self(path: str) -> None:
    with open(path, "w") as procs:
        procs.write("0")  # "0": the writer itself


def _spawn(argv, env, stdout, stderr, sched) -> int:
    actions = [(os.POSIX_SPAWN_DUP2, fd, target)
               for fd, target in ((stdout, 1), (stderr, 2)) if fd is not None]
    try:
        child = proc.spawn(argv, env=env, file_actions=actions, scheduler=sched)
    except OSError as err:
        raise OSError(err.errno, f"{_what_failed(argv, err)}: {err.strerror}") from None
    child.close()  # ham reaps with waitpid(-1) on SIGCHLD, not by pidfd
    return child.pid


def _what_failed(argv, err: OSError) -> str:
    # posix_spawn reports a refused scheduling policy and a missing program alike
    return f"exec {argv[0]}" if err.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC) \
        else f"start {argv[0]}"


def _fork_exec(argv, env, stdout, stderr, steps, log, name) -> int:
    import subprocess  # only here: ham's resident size stays small without it

    # The child reports each failed step here, "F|W errno text\n" (fatal or warning); the
    # write end is close-on-exec, so after exec (or the child's death) the parent reads EOF.
    report_r, report_w = os.pipe2(os.O_CLOEXEC)

    def prepare() -> None:  # in the child, between fork and exec
        _reset_signals()
        fdlimit.give_back()  # before the steps: the spec's own nofile comes after
        for what, fatal, call in steps:
            try:
                call()
            except (OSError, ValueError) as err:
                code = getattr(err, "errno", None) or errno.EINVAL
                reason = getattr(err, "strerror", None) or str(err)
                os.write(report_w, f"{'F' if fatal else 'W'}{code} {what}: {reason}\n".encode())
                if fatal:
                    raise

    try:
        try:
            child = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, close_fds=True,
                                     process_group=0, preexec_fn=prepare)
        except subprocess.SubprocessError:
            os.close(report_w)
            report_w = -1
            failure = _failure(_read_all(report_r))
            raise failure or OSError(errno.EIO, f"start {argv[0]}: failed before exec") from None
        except OSError as err:  # exec itself failed
            raise OSError(err.errno, f"exec {argv[0]}: {err.strerror}") from None
        os.close(report_w)
        report_w = -1
        for line in _read_all(report_r).splitlines():
            log(1, f"{name}: {line[1:].split(' ', 1)[1]}; started without it")
    finally:
        if report_w >= 0:
            os.close(report_w)
        os.close(report_r)
    child._child_created = False  # ham reaps every child itself: Popen must never reap
    proc.drop_oom_protection(child.pid)
    return child.pid


def _reset_signals() -> None:
    """What ham ignores, blocks or handles must not reach what it starts."""
    signal.set_wakeup_fd(-1)  # a signal here must not wake ham's loop
    for signum in _SIGNALS:
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # signals the C library reserves
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def _failure(report: str) -> OSError | None:
    for line in report.splitlines():
        if line.startswith("F"):
            code, text = line[1:].split(" ", 1)
            return OSError(int(code), text)
    return None


# -- stopping -----------------------------------------------------------------------------

class Stopping:
    """A stop under way: stop_signal sent, SIGKILL due after stop_timeout unless gone first."""

    def __init__(self, held: proc.Process, spec: dict, loop, on_dead):
        self.held = held
        self.loop = loop
        self.on_dead = on_dead
        signum = spec["stop_signal"]
        _signal_group(held, signum)
        if signum != signal.SIGKILL:
            _signal_group(held, signal.SIGCONT)  # a stopped process must run to see it
        self.timer = loop.call_later(spec["stop_timeout"], self._kill)
        loop.watch_pidfd(held.pidfd, self._gone)

    def _kill(self) -> None:
        _signal_group(self.held, signal.SIGKILL)

    def _gone(self) -> None:
        self.timer.cancel()
        self.held.close()
        self.on_dead()

    def cancel(self) -> None:
        """Stop watching (on_dead will not be called); what was sent stays sent."""
        self.timer.cancel()
        if self.held.pidfd >= 0:
            self.loop.remove_reader(self.held.pidfd)
            self.held.close()


def stop(pid: int, spec: dict, loop, on_dead, *, start: int | None = None) -> Stopping | None:
    """Stop the service process pid (and its process group): spec's stop_signal now, SIGKILL
    after spec's stop_timeout on loop's clock; on_dead() once it has exited.

    With start (its start time) only that very process is stopped, never a pid's next owner.
    Returns None, and calls on_dead on the loop, when it is already gone.
    """
    try:
        held = proc.Process.open(pid, expect=None if start is None else proc.ProcessId(pid, start))
    except (ProcessLookupError, PermissionError):
        loop.call_later(0, on_dead)
        return None
    return Stopping(held, spec, loop, on_dead)


def _signal_group(held: proc.Process, signum: int) -> None:
    # The group's id is the leader's pid, which no newcomer can take before the leader is
    # reaped, and single-threaded ham cannot reap between this check and the kill.
    if proc.pidfd_pid(held.pidfd) == held.pid:
        ids = proc.lineage(held.pid)
        try:
            os.killpg(held.pid, signum)
            if ids is not None and ids[2] == held.pid:
                return  # the leader is in its group: signalled once, as every member is
        except (ProcessLookupError, PermissionError):
            pass
    held.send_signal(signum)  # a leader that moved to a group of its own, or no group left
