"""ham's hands: start processes, follow daemons, kill, and deliver notify pulses and signals.

Spawning: as ham's own uid through posix_spawn (fastest: ham is a big Python process, a fork
would copy it); as another uid (a request from a non-root user runs as that user, QNX 8.0's
rule) through hamd.child (fork, the user's own supplementary groups, gid, uid, exec). Either way the child
gets default signal dispositions, an empty signal mask, its own process group, and
HAM_ENTITY=<name> in its environment: when a spawned process daemonizes (exits 0 leaving a
child behind), ham, a child subreaper, finds the orphan carrying its entity's tag and follows
it to the new pid, as QNX follows daemon().

Notify targets are held by (pid, start time), recorded when the action was added: a target
whose pid now names another process is not notified, and the action fails (QNX prunes it).
"""

import errno
import os
import _signal
import _socket

from hamtools.core import proc, wire
from hamtools.hamd import notify
from hamtools.core.seqpacket import peer_credentials

class Launcher:
    def __init__(self, log):
        self.log = log
        self.base_env = dict(os.environ)
        self.notify_path = None  # ham's sd_notify socket, once it exists (hamd.notify)
        self.before_spawn = None  # called with the entity before its process starts
        self._pulse_sockets: dict[tuple[int, int], _socket.socket] = {}

    # ---- processes ------------------------------------------------------------------

    def spawn(self, entity, argv: list[str], uid: int, gid: int, env: dict | None = None,
              spec: dict | None = None) -> int:
        """Start argv (for entity, which then holds the new pid); returns the pid.
        env: extra environment (a service's own, safe mode's)."""
        if self.before_spawn is not None:
            self.before_spawn(entity)
        env = {**self.base_env, **(env or {})}
        # an execute's orphans must never pass for the entity's daemon: its tag is empty
        env["HAM_ENTITY"] = entity.name if entity is not None else ""
        argv = notify.prepare(argv, env, self.notify_path, entity)
        if uid == os.geteuid():
            started = proc.spawn(argv, env=env)
            started.close()  # children are reaped with waitpid(-1) on SIGCHLD, not by pidfd
            pid = started.pid
        elif os.geteuid() != 0:
            raise PermissionError(errno.EPERM, "ham is not root: it cannot run as another user")
        else:
            from hamtools.hamd import child

            pid = child.start({"name": env["HAM_ENTITY"], "argv": argv, "uid": uid, "gid": gid},
                              env, self.log)
        if entity is not None:
            entity.pid, entity.start = pid, proc.start_time(pid)
            entity.spawned = True
        self.log(2, f"Started {argv[0]} as pid {pid}" + (f" for {entity.name}" if entity else ""))
        return pid

    def find_daemon(self, entity, known: set[int]) -> tuple[int | None, list[int]]:
        """(a child of ours tagged HAM_ENTITY=entity.name (reparented to us, the subreaper),
        children of ours that are exiting and cannot be read). An exiting child may be the
        middle of a double fork whose own child is not ours yet: look again once it is gone."""
        tag = f"HAM_ENTITY={entity.name}".encode()
        exiting = []
        for pid in sorted(proc.children(os.getpid())):
            if pid in known:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as environ:
                    if tag in environ.read().split(b"\0"):
                        return pid, []
            except ProcessLookupError:  # past exit_mm, not yet a zombie with its children given up
                exiting.append(pid)
            except OSError:
                continue
        return None, exiting

    def tagged_processes(self) -> dict[str, list[tuple[int, int, int, int]]]:
        return tagged_processes(self.base_env.get("HAM_RUNTIME_DIR", ""))

    def kill(self, pid: int) -> None:
        """SIGKILL pid's process group (ham starts every child as a group leader)."""
        for target in (lambda: os.killpg(pid, _signal.SIGKILL), lambda: os.kill(pid, _signal.SIGKILL)):
            try:
                target()
                return
            except (ProcessLookupError, PermissionError):
                continue

    # ---- notifications --------------------------------------------------------------

    def notify_pulse(self, params: dict) -> bool:
        pid, chid = params["pid"], params["chid"]
        if not _same_process(pid, params.get("start")):
            return False
        key = (pid, chid)
        data = wire.encode_pulse(wire.Pulse(code=params["code"], value=wire.to_int32(params["value"])))
        for attempt in range(2):  # a cached connection may have died: one fresh try
            sock = self._pulse_sockets.get(key) or self._connect(pid, chid)
            if sock is None:
                return False
            try:
                sock.send(data, _socket.MSG_DONTWAIT | _socket.MSG_NOSIGNAL)
                return True
            except OSError:
                sock.close()
                self._pulse_sockets.pop(key, None)
        return False

    def _connect(self, pid: int, chid: int) -> _socket.socket | None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            sock.setblocking(False)
            sock.connect(wire.channel_address(pid, chid))
            owner = peer_credentials(sock)[0]
        except OSError:
            sock.close()
            return None
        if owner != pid:  # the name is free for anyone to bind: only the target's own counts
            sock.close()
            return None
        # Kept open, so a target channel with _NTO_CHF_DISCONNECT is not sent a DISCONNECT
        # pulse after every notification.
        self._pulse_sockets[(pid, chid)] = sock
        return sock

    def notify_signal(self, params: dict) -> bool:
        """sigqueue(pid, signum, value). QNX's `code` cannot travel: Linux lets no process
        send another a non-negative si_code, so the receiver sees SI_QUEUE; ham logs it."""
        pid = params["pid"]
        if not _same_process(pid, params.get("start")):
            return False
        from hamtools.core.sigvalue import sigqueue  # ctypes, only once a signal is sent

        return sigqueue(pid, params["signum"], wire.to_int32(params["value"]))

    def close(self) -> None:
        for sock in self._pulse_sockets.values():
            sock.close()
        self._pulse_sockets.clear()


def tagged_processes(runtime_dir: str) -> dict[str, list[tuple[int, int, int, int]]]:
    """Every live process that a ham of runtime_dir started (or one of their children, which
    inherit the tag): entity name -> [(pid, start time, parent pid, process group)]. What a ham killed
    between a spawn and its next save left behind is found here (and the chaos test's
    judge counts duplicates and orphans with it)."""
    ours = b"HAM_RUNTIME_DIR=" + runtime_dir.encode()
    found: dict[str, list[tuple[int, int, int, int]]] = {}
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")  # a zombie's reads empty
        except OSError:
            continue
        if ours not in variables:
            continue
        tag = next((v[11:] for v in variables if v.startswith(b"HAM_ENTITY=")), b"")
        pid = int(name)
        ids = proc.lineage(pid)
        if tag and ids is not None:
            found.setdefault(tag.decode(errors="replace"), []).append((pid, *ids))
    return found


def topmost(tagged: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """Those of one entity's tagged processes whose parent is not one of them."""
    pids = {t[0] for t in tagged}
    return [t for t in tagged if t[2] not in pids]


def _same_process(pid: int, start: int | None) -> bool:
    return start is not None and proc.start_time(pid) == start

