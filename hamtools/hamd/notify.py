"""sd_notify for the processes ham starts (SPEC §3): a daemon written for systemd's watchdog
works under ham unchanged.

Every process ham starts gets NOTIFY_SOCKET=<runtime dir>/notify; one with a heartbeat period
also gets WATCHDOG_USEC (the period) and WATCHDOG_PID (its own pid: `/bin/sh` exports it and
execs the program, since posix_spawn cannot know the pid beforehand). What a datagram says:

  READY=1            ready (a service with ready = "notify" lets its followers start)
  RELOADING=1        not ready until the next READY=1
  STOPPING=1         shutting down (shown in status and the journal)
  STATUS=text        shown in hamctl status
  ERRNO=n            shown in hamctl status and the journal
  WATCHDOG=1         a heartbeat
  WATCHDOG=trigger   a missed heartbeat now: MISSEDHIGH fires (for a service: hung-worker kill)
  WATCHDOG_USEC=n    a new heartbeat period
  MAINPID=n          the entity's process is now n (a descendant of it, or named by root)
  BARRIER=1          nothing more: every fd a datagram carries is closed on arrival, as
                     systemd does (Debian's systemd-notify waits until then)

Who may say it: the kernel's credentials (SO_PASSCRED) must name the entity's process or one
of its descendants, as the entity's uid or root; anything else is dropped and logged (a few
lines per sender's uid and kind per window: HamLog.limited). Truncated datagrams and datagrams
without credentials are dropped and logged the same way.
"""

import _socket
import os
import struct

from hamtools.core import proc, sdnotify

BURST = 16  # datagrams per wakeup: the socket is everyone's, so a flood of strangers' waits its turn
_FDS_SPACE = _socket.CMSG_SPACE(sdnotify.CREDENTIALS.size) + _socket.CMSG_SPACE(253 * 4)
MAX_ANCESTRY = 64  # how far up from the sender a notification may look for its entity
MAX_STATUS = 256


def prepare(argv: list[str], env: dict, path: str | None, entity) -> list[str]:
    """Give a process ham starts for entity (None: an execute action's) ham's notify socket in
    env, and WATCHDOG_USEC/WATCHDOG_PID when entity has a heartbeat period; returns the argv
    to run (through /bin/sh, which exports its own pid as WATCHDOG_PID and execs argv)."""
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # never ham's own manager's
        env.pop(key, None)
    if path is None:
        return argv
    env["NOTIFY_SOCKET"] = path
    if entity is None or not entity.heartbeat:
        return argv
    env["WATCHDOG_USEC"] = str(int(entity.hb_period * 1e6))
    return ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *argv]


def _bind(path: str) -> _socket.socket:
    try:
        os.unlink(path)  # ours from an earlier run: ham.lock says nobody else is up
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
    sock.bind(path)
    os.chmod(path, 0o666)  # services run as any uid; credentials decide
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
    return sock


class NotifySocket:
    def __init__(self, ham, path: str, handover=None):
        """handover: from the ham before us (hamd.handover): its socket, with whatever its
        senders said during the takeover still queued in it."""
        self.ham = ham
        self.path = path
        self._index: dict[int, object] = {}  # pid -> entity, rebuilt when found stale or wanting
        self._uids: set[int] = set()  # the owners of the entities in it
        self.sock = (handover and handover.take_socket("notify", path, _socket.SOCK_DGRAM)) or _bind(path)
        ham.loop.add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.ham.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass

    # ---- receiving ------------------------------------------------------------------------

    def _readable(self) -> None:
        for _ in range(BURST):
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(sdnotify.MAX_MESSAGE, _FDS_SPACE,
                                                              _socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                self.ham.log(1, f"notify socket: {err.strerror}")
                return
            creds = _close_fds_and_find_credentials(ancillary)
            if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC) or creds is None:
                uid = "unknown" if creds is None else creds[1]
                self.ham.log.limited(1, f"malformed notifications of uid {uid}",
                                     "notify: dropped a datagram that was truncated or had no credentials")
                continue
            self.received(data, *creds)

    def received(self, data: bytes, pid: int, uid: int, gid: int) -> None:
        try:
            fields = sdnotify.parse(data)
        except ValueError as bad:
            self.ham.log.limited(1, f"malformed notifications of uid {uid}",
                                 f"notify from pid {pid} (uid {uid}): {bad}")
            return
        entity = self.sender_entity(pid, uid)
        if entity is None:
            self.ham.log.limited(1, f"refused notifications of uid {uid}",
                                 f"notify from pid {pid} (uid {uid}) refused: no entity of its own")
            return
        self.apply(entity, fields, pid, uid)

    def sender_entity(self, pid: int, uid: int):
        """The entity whose process is pid or an ancestor of it, if uid may speak for it.
        A uid that owns no running entity may speak for none: it is refused before the walk
        up its ancestry, which a flood of strangers' datagrams would make ham do for each."""
        if uid != 0 and uid not in self._uids:
            self._reindex()
            if uid not in self._uids:
                return None
        reindexed = False
        for _ in range(MAX_ANCESTRY):
            entity = self._index.get(pid)
            if entity is not None and (entity.pid != pid or self.ham.model.entities.get(entity.name) is not entity):
                entity = None  # stale: the index is rebuilt below
                self._index.pop(pid)
            if entity is None and not reindexed:  # once per datagram, however long the walk
                self._reindex()
                reindexed = True
                entity = self._index.get(pid)
            if entity is not None:
                return entity if uid in (0, entity.uid) else None
            pid = proc.parent(pid)
            if pid <= 1:
                return None
        return None

    def _reindex(self) -> None:
        self._index = {e.pid: e for e in self.ham.model.entities.values() if e.pid is not None and e.kind != "global"}
        self._uids = {e.uid for e in self._index.values()}

    # ---- what it says ---------------------------------------------------------------------

    def apply(self, entity, fields: dict, sender: int, uid: int) -> None:
        engine = self.ham.engine
        note = []
        if "STATUS" in fields:
            entity.notify_status = fields["STATUS"][:MAX_STATUS]
        if "ERRNO" in fields:
            entity.notify_errno = _number(fields["ERRNO"])
            note.append(f"ERRNO={entity.notify_errno}")
        if fields.get("STOPPING") == "1":
            entity.notify_state = "stopping"
            note.append("STOPPING")
        if fields.get("RELOADING") == "1":
            entity.notify_state = "reloading"
            entity.ready = False
            note.append("RELOADING")
        if "WATCHDOG_USEC" in fields:
            usec = _number(fields["WATCHDOG_USEC"])
            if usec and usec > 0:
                entity.hb_period = usec / 1e6
                engine.hb_start(entity)
                note.append(f"WATCHDOG_USEC={usec}")
        if "MAINPID" in fields:
            self._main_pid(entity, _number(fields["MAINPID"]), uid)
        if fields.get("WATCHDOG") == "1":
            engine.beat(entity)
        elif fields.get("WATCHDOG") == "trigger":
            note.append("WATCHDOG=trigger")
            engine.hb_trigger(entity)
        if fields.get("READY") == "1":
            entity.notify_state = "ready"
            self.ham.became_ready(entity)
        if note:
            self.ham.log(2, f"notify from {entity.name} (pid {sender}): {' '.join(note)}")
            self.ham.engine.journal(entity.name, None, "notify", note=" ".join(note))

    def _main_pid(self, entity, pid: int | None, uid: int) -> None:
        if pid is None or pid <= 1 or pid == entity.pid:
            return
        ident = proc.ProcessId.of(pid)
        allowed = ident is not None and (uid == 0 or proc.is_descendant(pid, entity.pid))
        if not allowed:
            self.ham.log.limited(1, f"refused notifications of uid {uid}",
                                 f"notify: {entity.name}: MAINPID={pid} refused (not its process)")
            return
        self.ham.log(1, f"{entity.name}: main pid {entity.pid} -> {pid} (MAINPID)")
        self.ham.follow(entity, pid)


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _close_fds_and_find_credentials(ancillary) -> tuple[int, int, int] | None:
    creds = None
    for level, kind, body in ancillary:
        if level != _socket.SOL_SOCKET:
            continue
        if kind == _socket.SCM_RIGHTS:
            # struct, not array: array's import brings collections along (resident size)
            for fd in struct.unpack(f"{len(body) // 4}i", body[:len(body) - len(body) % 4]):
                os.close(fd)
        elif kind == _socket.SCM_CREDENTIALS and len(body) >= sdnotify.CREDENTIALS.size:
            creds = sdnotify.CREDENTIALS.unpack_from(body)
    return creds

