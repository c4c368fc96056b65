"""ham's two sockets: `control` (0660, ham's group) and `client` (0666), AF_UNIX SEQPACKET.

Each peer is known by SO_PEERCRED from the moment it connects; every datagram is one frame
(hamtools.core.wire), size-bounded by the kernel (a bigger one arrives truncated and is
answered EMSGSIZE), decoded and validated before anything acts on it. A malformed request gets
an error answer and nothing else happens; a peer that stalls (never reads its answers) is
dropped; the number of peers is bounded. Every refusal (a connection, a request ham does not
permit, a malformed frame or request, a stalled peer) is logged, a few lines per kind and uid
per window (HamLog.limited): a local user cannot flood the log. Sockets are _socket's (see
core.loop: the socket module costs the daemon resident size).
"""

import errno
import os
import _socket

from hamtools.core import wire
from hamtools.core.seqpacket import peer_credentials, read_datagram
from hamtools.core import hamproto as protocol
from hamtools.hamd.model import ADMIN_UIDS, HamError

# Peers each socket admits: the control socket has its own room, so users filling the client
# socket cannot lock administrators out; one unprivileged uid gets a share of the client socket.
MAX_PEERS = {"control": 64, "client": 1024}
MAX_PEERS_PER_UID = 128
# Descriptors kept out of the client socket's reach: room for every control peer and for
# starting entities (a pidfd, capture pipes) when users hold all the rest.
FD_RESERVE = MAX_PEERS["control"] + 64
ACCEPT_PAUSE = 0.1  # s a listener rests when accept finds no descriptor free (EMFILE, ENFILE):
#                     its connections wait in the backlog, not in a loop that spins on them
BURST = 64  # datagrams read from one peer per wakeup, so one flooder cannot starve others
UID_BURST = 16  # ... and from all the peers of one unprivileged uid together: however many
#                 connections a flooding user opens, ham's answer to anyone else waits for at
#                 most this much of its work (scripts/bench_flood)
UID_RATE = 5000  # datagrams per second ham reads from one unprivileged uid's peers, in bursts
UID_RESERVE = 500  # of up to this many; past that it stops reading them until the allowance
#                    refills (they wait in the kernel's queues), so a flooding user gets a
#                    bounded share of ham's time, not the 90 % of a core it took; 256 entities
#                    (what one uid may own) beating at 10 Hz are half of it


BIG_ANSWER = 16 * 1024  # an answer this long (a status of dozens of entities) is followed by a heap trim
MAX_ANSWER = 16 * 1024 * 1024  # the longest answer (a status of thousands of entities)
MAX_QUEUED = 32 * 1024 * 1024  # answers waiting for a peer that reads slowly; past that, it stalls


class Conn:
    __slots__ = ("sock", "pid", "uid", "gid", "control", "self_entities", "out", "queued")

    def __init__(self, sock, pid, uid, gid, control):
        self.sock, self.pid, self.uid, self.gid, self.control = sock, pid, uid, gid, control
        self.self_entities = {}  # name -> Entity attached through this connection
        self.out: list[bytes] = []  # frames the socket had no room for yet, oldest first
        self.queued = 0  # their bytes


class Server:
    def __init__(self, ham, runtime_dir: str, gid: int):
        self.ham = ham
        self.loop = ham.loop
        self.runtime_dir = runtime_dir
        self.gid = gid
        self.listeners: list[_socket.socket] = []
        self.conns: dict[int, Conn] = {}
        self._turn = -1  # the loop's wakeup that _read_by_uid counts for
        self._read_by_uid: dict[int, int] = {}
        self._allowances: dict[int, list[float]] = {}  # uid -> [datagrams it may send, as of when]
        self._paused: dict[int, object] = {}  # uid -> the timer that reads its peers again
        self._client_fds = 0  # a client peer's descriptor must be below this (open() sets it)

    def open(self, fd_limit: int, handover=None) -> None:
        """Bind the two sockets, or take them from the ham before us (hamd.handover): then
        whoever connected during the takeover is still waiting in their backlog. fd_limit:
        ham's soft RLIMIT_NOFILE."""
        self._client_fds = fd_limit - FD_RESERVE
        if self._client_fds < MAX_PEERS["client"]:
            self.ham.log(1, f"ham may open {fd_limit} descriptors: the client socket admits "
                            f"{max(0, self._client_fds)} peers at most (raise the hard limit, ulimit -Hn)")
        for name, mode, control in (("control", 0o660, True), ("client", 0o666, False)):
            path = os.path.join(self.runtime_dir, name)
            listener = (handover and handover.take_socket(name, path, _socket.SOCK_SEQPACKET)) or self._bind(path, mode)
            listener.setblocking(False)
            self.listeners.append(listener)
            self._listen(listener, control)

    def _bind(self, path: str, mode: int) -> _socket.socket:
        try:
            os.unlink(path)  # ours from an earlier run: the lock says nobody else is up
        except FileNotFoundError:
            pass
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        listener.bind(path)
        os.chmod(path, mode)
        os.chown(path, -1, self.gid)
        listener.listen(128)
        return listener

    def handover_fds(self) -> dict[str, int]:
        return dict(zip(("control", "client"), (listener.fileno() for listener in self.listeners)))

    def _listen(self, listener: _socket.socket, control: bool) -> None:
        self.loop.add_reader(listener.fileno(), lambda: self._accept(listener, control), first=control)

    def _accept(self, listener: _socket.socket, control: bool) -> None:
        while True:
            try:
                fd, _ = listener._accept()  # _socket's accept4(SOCK_CLOEXEC): the fd alone
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:  # EMFILE, ENFILE, ENOMEM: the rest wait in the backlog
                self.loop.remove_reader(listener.fileno())
                self.loop.call_later(ACCEPT_PAUSE, lambda: self._listen(listener, control))
                which = "control" if control else "client"
                self.ham.log.limited(0, f"accept on the {which} socket",
                                     f"cannot accept on the {which} socket: {err.strerror}")
                return
            sock = _socket.socket(fileno=fd)
            pid, uid, gid = peer_credentials(sock)
            refusal = self._refusal(control, uid, fd)
            if refusal:
                sock.close()
                self.ham.log.limited(1, f"refused connections of uid {uid}",
                                     f"refusing a connection from pid {pid} (uid {uid}): {refusal}")
                continue
            sock.setblocking(False)
            conn = Conn(sock, pid, uid, gid, control)
            self.conns[sock.fileno()] = conn
            self._watch(conn)

    def _watch(self, conn: Conn) -> None:
        self.loop.add_reader(conn.sock.fileno(), lambda: self._readable(conn), first=conn.control)

    def _refusal(self, control: bool, uid: int, fd: int) -> str | None:
        peers = [c for c in self.conns.values() if c.control == control]
        if len(peers) >= MAX_PEERS["control" if control else "client"]:
            return "too many peers"
        if not control and fd >= self._client_fds:  # fds are allocated lowest first
            return "ham is short of descriptors"
        if (not control and uid not in ADMIN_UIDS
                and sum(c.uid == uid for c in peers) >= MAX_PEERS_PER_UID):
            return f"uid {uid} has {MAX_PEERS_PER_UID} connections already"
        return None

    def _allowance(self, conn: Conn) -> int:
        """Datagrams to read from conn in this turn of the loop (the rest wait for the next:
        the socket stays readable); an unprivileged uid past its rate is paused instead."""
        if conn.uid in ADMIN_UIDS:
            return BURST
        if self._turn != self.loop.wakeups:
            self._turn, self._read_by_uid = self.loop.wakeups, {}
        now = self.loop.clock.monotonic()
        if conn.uid not in self._allowances and len(self._allowances) >= MAX_PEERS["client"]:
            self._forget_refilled(now)
        allowance = self._allowances.setdefault(conn.uid, [UID_RESERVE, now])
        allowance[:] = [min(UID_RESERVE, allowance[0] + (now - allowance[1]) * UID_RATE), now]
        if allowance[0] < 1:
            self._pause(conn.uid, allowance[0])
            return 0
        # (the epsilon: the resume timer fires when a whole burst has refilled, not a hair less)
        return min(BURST, UID_BURST - self._read_by_uid.get(conn.uid, 0), int(allowance[0] + 1e-9))

    def _forget_refilled(self, now: float) -> None:
        """Drop the allowances that have refilled (as good as new): the table stays bounded,
        and a uid cannot refill its own by closing its peers and connecting again."""
        for uid, (left, when) in list(self._allowances.items()):
            if left + (now - when) * UID_RATE >= UID_RESERVE:
                del self._allowances[uid]

    def _pause(self, uid: int, allowance: float) -> None:
        """Stop reading uid's peers until it may send a burst again (a socket left readable
        would wake the loop at once, again and again)."""
        for conn in self.conns.values():
            if conn.uid == uid:
                self.loop.remove_reader(conn.sock.fileno())
        if uid not in self._paused:
            self._paused[uid] = self.loop.call_later((UID_BURST - allowance) / UID_RATE, lambda: self._resume(uid))
            self.ham.log.limited(1, f"paused peers of uid {uid}",
                                 f"uid {uid} sends more than {UID_RATE} messages/s: its peers wait")

    def _resume(self, uid: int) -> None:
        del self._paused[uid]
        for conn in self.conns.values():
            if conn.uid == uid:
                self._watch(conn)

    def _readable(self, conn: Conn) -> None:
        counted = conn.uid not in ADMIN_UIDS
        for _ in range(self._allowance(conn)):
            got = read_datagram(conn.sock, wire.MAX_FRAME)
            if got is None:
                return
            if counted:
                self._read_by_uid[conn.uid] = self._read_by_uid.get(conn.uid, 0) + 1
                self._allowances[conn.uid][0] -= 1
            data, truncated = got
            if not data:
                self.close(conn)
                return
            try:
                frame = wire.decode_datagram(data, truncated)
            except wire.ProtocolError as bad:
                self._malformed(conn, f"bad frame: {bad}")
                self._send(conn, wire.encode_error(bad.msg_id, bad.errno))
                continue
            if frame.kind == wire.SEND:
                self._request(conn, frame)
            elif frame.kind == wire.PULSE:
                self._pulse(conn, frame)
            else:
                self._malformed(conn, f"a {wire.KIND_NAMES[frame.kind]} frame")
                self._send(conn, wire.encode_error(frame.msg_id, errno.EBADMSG))
            if conn.sock.fileno() < 0:
                return

    def _request(self, conn: Conn, frame: wire.Frame) -> None:
        op = None
        try:
            op, args = protocol.decode_request(frame.body)
            status, body = protocol.encode_answer(self.ham.requests.handle(conn, op, args))
        except protocol.BadRequest as bad:
            self._malformed(conn, f"bad request: {bad}")
            status, body = protocol.encode_failure(errno.EINVAL, str(bad))
        except HamError as refused:
            if refused.errno == errno.EPERM:
                where = "control" if conn.control else "client"
                self.ham.log.limited(1, f"refused requests of uid {conn.uid}",
                                     f"refused {op} from pid {conn.pid} (uid {conn.uid}) on the {where} "
                                     f"socket: {refused.strerror}")
            status, body = protocol.encode_failure(refused.errno, refused.strerror)
        except Exception as bug:  # the daemon survives any message
            self.ham.log(0, f"internal error serving pid {conn.pid}: {type(bug).__name__}: {bug}")
            status, body = protocol.encode_failure(errno.EIO, "internal error in ham")
        if len(body) > MAX_ANSWER:
            status, body = protocol.encode_failure(errno.E2BIG, f"the answer is over {MAX_ANSWER} bytes")
        frames = list(wire.encode_long_reply(frame.msg_id, status, body))
        self.ham.when_saved(lambda: self._send_all(conn, frames))
        if len(body) > BIG_ANSWER:
            self.ham.trim_soon()

    def _send_all(self, conn: Conn, frames: list[bytes]) -> None:
        for data in frames:
            self._send(conn, data)

    def _pulse(self, conn: Conn, frame: wire.Frame) -> None:
        pulse = wire.Pulse.unpack(frame.body)
        if pulse.code != protocol.HBEAT_CODE:
            self._malformed(conn, f"a pulse with code {pulse.code}")
            return
        for entity in conn.self_entities.values():  # a beat on a connection of no entity: a no-op
            self.ham.engine.beat(entity)

    def _malformed(self, conn: Conn, what: str) -> None:
        self.ham.log.limited(1, f"malformed messages of uid {conn.uid}",
                             f"malformed message from pid {conn.pid} (uid {conn.uid}): {what}")

    def _send(self, conn: Conn, data: bytes) -> None:
        """Send a frame, or queue it behind those the socket had no room for."""
        if conn.sock.fileno() < 0:
            return
        if not conn.out and self._try_send(conn, data):
            return
        if conn.queued + len(data) > MAX_QUEUED:
            self.ham.log.limited(1, f"dropped peers of uid {conn.uid}",
                                 f"pid {conn.pid} (uid {conn.uid}) does not read its answers: dropping it")
            self.close(conn)
            return
        if not conn.out:
            self.loop.add_writer(conn.sock.fileno(), lambda: self._writable(conn))
        conn.out.append(data)
        conn.queued += len(data)

    def _try_send(self, conn: Conn, data: bytes) -> bool:
        """True when sent (or the peer is gone and closed); False when the socket is full."""
        try:
            conn.sock.send(data, _socket.MSG_DONTWAIT | _socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return False
        except OSError:
            self.close(conn)
        return True

    def _writable(self, conn: Conn) -> None:
        while conn.out:
            if not self._try_send(conn, conn.out[0]):
                return
            if conn.sock.fileno() < 0:
                return
            conn.queued -= len(conn.out.pop(0))
        self.loop.remove_writer(conn.sock.fileno())

    def close(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self.loop.remove_reader(fd)
        if conn.out:
            self.loop.remove_writer(fd)
            conn.out.clear()
        self.conns.pop(fd, None)
        conn.sock.close()
        for entity in conn.self_entities.values():
            self.ham.self_connection_lost(entity)
        conn.self_entities.clear()

    def shutdown(self) -> None:
        for timer in self._paused.values():
            timer.cancel()
        self._paused.clear()
        for conn in list(self.conns.values()):
            self.loop.remove_reader(conn.sock.fileno())
            if conn.out:
                self.loop.remove_writer(conn.sock.fileno())
            conn.sock.close()
        self.conns.clear()
        for listener in self.listeners:
            path = listener.getsockname()
            self.loop.remove_reader(listener.fileno())
            listener.close()
            try:
                os.unlink(path)
            except OSError:
                pass
        self.listeners.clear()
