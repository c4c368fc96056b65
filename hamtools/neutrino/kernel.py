"""What QNX's kernel does for message passing, emulated inside each Python process.

A channel is a listening AF_UNIX SOCK_SEQPACKET socket bound to the abstract name
`\\0hamtools/chan/<pid>/<chid>`; a connection (coid) is a socket connected to one. Each
datagram is one frame of `wire`. There is no kernel thread: a server's MsgReceive reads its
sockets, and the emulated kernel pulses are generated where QNX's kernel would see the event:

- DISCONNECT: a server connection reaches EOF and it was the last one from that client process.
- UNBLOCK: the client's MsgSend was interrupted by a signal (its handler raised, as SIGINT's
  does) and it sent an UNBLOCK frame; a message the server had not received yet is withdrawn
  at once with EINTR, as for a SEND-blocked QNX client.
- COIDDEATH: a COID_DISCONNECT channel's MsgReceive also watches every coid of the process
  for hang-up (POLLRDHUP only: it never consumes a reply meant for a MsgSend).
- THREADDEATH: every thread started after this module is imported is wrapped; its exit queues
  the pulse (value: its QNX-style thread id, main thread 1, then 2, 3, ...).

Abstract names have no permissions, so every message and pulse carries the sender's
pid/uid/gid from SO_PEERCRED (fixed at connect time) for the receiver to check.
"""

import _thread
import errno
import os
import select
import signal
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from hamtools.core import wire
from hamtools.core.seqpacket import peer_credentials, read_datagram
from hamtools.core.wire import Frame, ProtocolError, Pulse, channel_address
from hamtools.neutrino import consts as c

HANGUP = select.POLLHUP | select.POLLRDHUP | select.POLLERR | select.POLLNVAL
SCOID_BASE = 0x40000000  # QNX's _NTO_SIDE_CHANNEL range, so scoids never look like coids
_CATCHABLE = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
ACCEPT_PAUSE = 0.1  # s a channel's listener rests when accept finds no descriptor free


def _oserror(err: int, detail: str = "") -> OSError:
    text = os.strerror(err)
    return OSError(err, f"{text}: {detail}" if detail else text)


@dataclass(frozen=True, slots=True)
class MsgInfo:
    """Who sent a received message or pulse (QNX's struct _msg_info, the useful part)."""

    pid: int
    uid: int
    gid: int
    chid: int
    scoid: int
    msglen: int = 0


class Received(tuple):
    """MsgReceive's result: unpacks as (rcvid, msg, info); rcvid 0 means msg is a Pulse."""

    def __new__(cls, rcvid: int, msg: "bytes | Pulse", info: MsgInfo):
        return super().__new__(cls, (rcvid, msg, info))

    rcvid = property(lambda self: self[0])
    msg = property(lambda self: self[1])
    info = property(lambda self: self[2])


class SendResult(tuple):
    """MsgSend's result: unpacks as (status, reply bytes), status from MsgReply."""

    def __new__(cls, status: int, data: bytes):
        return super().__new__(cls, (status, data))

    status = property(lambda self: self[0])
    data = property(lambda self: self[1])


@dataclass(eq=False)
class _ServerConn:
    sock: socket.socket
    channel: "_Channel"
    pid: int
    uid: int
    gid: int
    scoid: int
    closed: bool = False
    send_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(eq=False)
class _Message:
    conn: _ServerConn
    msg_id: int
    body: bytes


@dataclass(eq=False)
class _Channel:
    chid: int
    flags: int
    listener: socket.socket
    wake_fd: int  # eventfd: kernel pulses queued from other threads, coid set changed
    conns: dict = field(default_factory=dict)  # fd -> _ServerConn
    inbox: deque = field(default_factory=deque)  # _Message and Pulse, in arrival order
    recv_lock: threading.Lock = field(default_factory=threading.Lock)
    destroyed: bool = False
    accept_after: float = 0.0  # monotonic: the listener rests until then (no descriptor was free)


@dataclass(eq=False)
class _Connection:
    coid: int
    sock: socket.socket
    pid: int
    chid: int
    lock: threading.Lock = field(default_factory=threading.Lock)  # one MsgSend at a time
    next_msg_id: int = 1
    dead: bool = False  # the server side went away (COIDDEATH reported once)


class Kernel:
    """All neutrino state of one process; `kernel` below is the instance."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pid = os.getpid()
        self.channels: dict[int, _Channel] = {}
        self.connections: dict[int, _Connection] = {}
        self.rcvids: dict[int, _Message] = {}
        self.next_chid = 1
        self.next_rcvid = 1
        self.scoid_of_pid: dict[int, int] = {}  # client pid -> scoid, while it has connections
        self.scoid_refs: dict[int, int] = {}  # scoid -> live server connections
        self.next_scoid = SCOID_BASE + 1
        self.thread_death_chid = 0
        self.coid_death_chid = 0

    # ---- channels -------------------------------------------------------------------

    def channel_create(self, flags: int) -> int:
        if flags < 0 or flags & ~0xFFFF:
            raise _oserror(errno.EINVAL, f"channel flags 0x{flags:x}")
        with self.lock:
            if flags & c._NTO_CHF_THREAD_DEATH and self.thread_death_chid:
                raise _oserror(errno.EBUSY, "this process already has a THREAD_DEATH channel")
            if flags & c._NTO_CHF_COID_DISCONNECT and self.coid_death_chid:
                raise _oserror(errno.EBUSY, "this process already has a COID_DISCONNECT channel")
            chid = self.next_chid
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                listener.bind(channel_address(self.pid, chid))
                listener.listen(128)
                listener.setblocking(False)
            except OSError:
                listener.close()
                raise
            self.next_chid += 1
            channel = _Channel(chid, flags, listener, os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
            self.channels[chid] = channel
            if flags & c._NTO_CHF_THREAD_DEATH:
                self.thread_death_chid = chid
            if flags & c._NTO_CHF_COID_DISCONNECT:
                self.coid_death_chid = chid
            return chid

    def channel_destroy(self, chid: int) -> None:
        with self.lock:
            channel = self._channel(chid)
            channel.destroyed = True
            del self.channels[chid]
            if self.thread_death_chid == chid:
                self.thread_death_chid = 0
            if self.coid_death_chid == chid:
                self.coid_death_chid = 0
            for conn in list(channel.conns.values()):
                self._close_server_conn(conn, report=False)
            for rcvid in [r for r, m in self.rcvids.items() if m.conn.channel is channel]:
                del self.rcvids[rcvid]
            channel.listener.close()
            os.close(channel.wake_fd)

    def _channel(self, chid: int) -> _Channel:
        channel = self.channels.get(chid)
        if channel is None:
            raise _oserror(errno.EINVAL, f"no channel {chid} in this process")
        return channel

    # ---- client side ----------------------------------------------------------------

    def connect_attach(self, nd: int, pid: int, chid: int) -> int:
        if nd != c.ND_LOCAL_NODE:
            raise _oserror(errno.EINVAL, f"node {nd}: only ND_LOCAL_NODE (0) is supported")
        pid = pid or self.pid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(channel_address(pid, chid))
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            raise _oserror(errno.ESRCH, f"no channel {chid} in process {pid}") from None
        except OSError:
            sock.close()
            raise
        with self.lock:
            coid = sock.fileno()
            self.connections[coid] = _Connection(coid, sock, pid, chid)
            self._wake_coid_watcher()
        return coid

    def reconnect_attach(self, oldcoid: int, nd: int, pid: int, chid: int) -> int:
        """Connect again under oldcoid's number (libha's ha_ReConnectAttach): the new socket is
        dup2'ed over the stale one, so no other connection can take the number meanwhile."""
        with self.lock:
            old = self.connections.get(oldcoid)
        if old is None:
            raise _oserror(errno.EBADF, f"no connection {oldcoid}")
        newcoid = self.connect_attach(nd, pid, chid)
        with self.lock:
            fresh = self.connections.pop(newcoid)
            os.dup2(fresh.sock.fileno(), oldcoid, inheritable=False)
            fresh.sock.close()
            # old.sock's fd now is the new connection; a new record clears dead and the msg ids
            self.connections[oldcoid] = _Connection(oldcoid, old.sock, pid or self.pid, chid)
            self._wake_coid_watcher()
        return oldcoid

    def connect_detach(self, coid: int) -> None:
        with self.lock:
            conn = self.connections.pop(coid, None)
            if conn is not None:
                conn.sock.close()  # the server sees EOF: its DISCONNECT if this was the last
                self._wake_coid_watcher()
                return
            if coid in self.scoid_refs:  # a server detaching a scoid it got in a DISCONNECT
                if self.scoid_refs[coid] == 0:
                    del self.scoid_refs[coid]
                return
        raise _oserror(errno.EINVAL, f"no connection {coid}")

    def _wake_coid_watcher(self) -> None:
        if self.coid_death_chid:
            os.eventfd_write(self.channels[self.coid_death_chid].wake_fd, 1)

    def _connection(self, coid: int) -> _Connection:
        with self.lock:
            conn = self.connections.get(coid)
        if conn is None:
            raise _oserror(errno.EBADF, f"no connection {coid}")
        return conn

    def msg_send(self, coid: int, msg: bytes) -> SendResult:
        conn = self._connection(coid)
        if len(msg) > wire.MAX_BODY:
            raise _oserror(errno.EMSGSIZE, f"{len(msg)} bytes is over the {wire.MAX_BODY}-byte limit")
        with conn.lock:
            msg_id = conn.next_msg_id
            conn.next_msg_id = msg_id % 0x7FFFFFFF + 1
            # Signals stay blocked except while waiting (a PEEK, which consumes nothing): a
            # signal handler can then raise only where the unblock protocol catches it, and
            # never between reading an answer and handling it (the answer would be lost).
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, _CATCHABLE)
            try:
                self._client_send(conn, wire.encode(wire.SEND, msg_id, bytes(msg)))
                return self._await_answer(conn, msg_id, mask)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _await_answer(self, conn: _Connection, msg_id: int, mask) -> SendResult:
        interrupt: BaseException | None = None
        while True:
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                self._client_peek(conn)
                signal.pthread_sigmask(signal.SIG_BLOCK, _CATCHABLE)
                frame = self._client_recv(conn)
            except OSError as err:
                if interrupt is not None:  # the server died before answering the unblock
                    interrupt.__context__ = err
                    raise interrupt from None
                raise
            except BaseException as signal_exc:  # a signal handler raised (SIGINT...)
                # QNX keeps a REPLY-blocked client blocked and tells the server; the
                # signal's effect waits until the server replies or MsgErrors.
                signal.pthread_sigmask(signal.SIG_BLOCK, _CATCHABLE)
                if interrupt is None:
                    interrupt = signal_exc
                    self._client_send(conn, wire.encode(wire.UNBLOCK, msg_id))
                continue
            if frame is None or frame.msg_id != msg_id or frame.kind not in (wire.REPLY, wire.ERROR):
                continue  # garbage, or the late answer to an earlier send that was abandoned
            value, data = wire.decode_status(frame)
            if interrupt is not None:
                if frame.kind == wire.ERROR:
                    interrupt.__context__ = _oserror(value)
                raise interrupt
            if frame.kind == wire.ERROR:
                if value == c.EOK:
                    return SendResult(0, b"")
                raise _oserror(value)
            return SendResult(value, data)

    def msg_send_pulse(self, coid: int, priority: int, code: int, value: int) -> None:
        if not -128 <= code <= 127:
            raise _oserror(errno.EINVAL, f"pulse code {code} is not an int8")
        conn = self._connection(coid)
        frame = wire.encode_pulse(Pulse(code=code, value=wire.to_int32(value)))
        try:
            conn.sock.send(frame, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            raise _oserror(errno.EAGAIN, "the server's pulse queue is full") from None
        except (BrokenPipeError, ConnectionResetError):
            conn.dead = True
            raise _oserror(errno.ESRCH, f"the server of connection {coid} is gone") from None

    def _client_send(self, conn: _Connection, data: bytes) -> None:
        if conn.dead:
            raise _oserror(errno.ESRCH, f"the server of connection {conn.coid} is gone")
        try:
            conn.sock.send(data, socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError):
            conn.dead = True
            raise _oserror(errno.ESRCH, f"the server of connection {conn.coid} is gone") from None

    def _client_peek(self, conn: _Connection) -> None:
        """Wait until an answer (or EOF) is there, consuming nothing."""
        try:
            conn.sock.recv(1, socket.MSG_PEEK)
        except ConnectionResetError:
            pass

    def _client_recv(self, conn: _Connection) -> Frame | None:
        """Take the datagram waiting on the connection (None if it was not a frame)."""
        got = read_datagram(conn.sock, wire.MAX_FRAME, socket.MSG_DONTWAIT)
        if got is None:
            return None
        data, truncated = got
        if not data:
            conn.dead = True
            raise _oserror(errno.ESRCH, f"the server of connection {conn.coid} died")
        try:
            return wire.decode_datagram(data, truncated)
        except ProtocolError:
            return None  # a server that speaks garbage cannot answer this send; keep waiting

    # ---- server side ----------------------------------------------------------------

    def msg_receive(self, chid: int, timeout: float | None, pulses_only: bool) -> Received:
        channel = self._channel(chid)
        with channel.recv_lock:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                item = self._take(channel, pulses_only)
                if item is not None:
                    return item
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise _oserror(errno.ETIMEDOUT, "MsgReceive timed out")
                self._wait(channel, remaining)

    def _take(self, channel: _Channel, pulses_only: bool) -> Received | None:
        with self.lock:
            if channel.destroyed:
                raise _oserror(errno.EINVAL, f"channel {channel.chid} was destroyed")
            for item in list(channel.inbox):
                if isinstance(item, Pulse):
                    channel.inbox.remove(item)
                    info = MsgInfo(item.pid, item.uid, item.gid, channel.chid, item.scoid,
                                   wire.PULSE_STRUCT.size)
                    return Received(0, item, info)
                if pulses_only:
                    continue
                channel.inbox.remove(item)
                if item.conn.closed:
                    continue  # its sender died before we got to it
                rcvid = self.next_rcvid
                self.next_rcvid = rcvid % 0x7FFFFFFF + 1
                self.rcvids[rcvid] = item
                conn = item.conn
                info = MsgInfo(conn.pid, conn.uid, conn.gid, channel.chid, conn.scoid, len(item.body))
                return Received(rcvid, item.body, info)
        return None

    def _wait(self, channel: _Channel, timeout: float | None) -> bool:
        """Block until something arrives; move what arrived into the inbox. True if any did."""
        poller = select.poll()
        resting = channel.accept_after - time.monotonic()
        if resting > 0:  # its connections wait in the backlog; we look again after the rest
            timeout = resting if timeout is None else min(timeout, resting)
        else:
            poller.register(channel.listener, select.POLLIN)
        poller.register(channel.wake_fd, select.POLLIN)
        with self.lock:
            conns = dict(channel.conns)
            coids = dict(self.connections) if channel.flags & c._NTO_CHF_COID_DISCONNECT else {}
        for fd in conns:
            poller.register(fd, select.POLLIN | select.POLLRDHUP)
        watched = {}
        for coid, conn in coids.items():
            if not conn.dead:
                watched[conn.sock.fileno()] = conn
                poller.register(conn.sock.fileno(), select.POLLRDHUP)
        events = poller.poll(None if timeout is None else timeout * 1000)
        for fd, mask in events:
            if fd == channel.listener.fileno():
                self._accept_all(channel)
            elif fd == channel.wake_fd:
                try:
                    os.eventfd_read(channel.wake_fd)
                except BlockingIOError:
                    pass
            elif fd in conns:
                self._drain(conns[fd])
            elif fd in watched and mask & HANGUP:
                self._coid_died(channel, watched[fd])
        return bool(events)

    def _accept_all(self, channel: _Channel) -> None:
        while True:
            try:
                sock, _ = channel.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: a readable listener would wake us at once
                channel.accept_after = time.monotonic() + ACCEPT_PAUSE
                return
            pid, uid, gid = peer_credentials(sock)
            sock.setblocking(False)
            with self.lock:
                scoid = self.scoid_of_pid.get(pid)
                if scoid is None:
                    scoid = self.next_scoid
                    self.next_scoid += 1
                    self.scoid_of_pid[pid] = scoid
                self.scoid_refs[scoid] = self.scoid_refs.get(scoid, 0) + 1
                channel.conns[sock.fileno()] = _ServerConn(sock, channel, pid, uid, gid, scoid)

    def _drain(self, conn: _ServerConn) -> None:
        """Read every datagram waiting on a server connection."""
        while not conn.closed:
            got = read_datagram(conn.sock, wire.MAX_FRAME)
            if got is None:
                return
            data, truncated = got
            if not data:
                with self.lock:
                    self._close_server_conn(conn, report=True)
                return
            try:
                frame = wire.decode_datagram(data, truncated)
            except ProtocolError as bad:
                self._answer(conn, wire.encode_error(bad.msg_id, bad.errno))
                continue
            self._dispatch(conn, frame)

    def _dispatch(self, conn: _ServerConn, frame: Frame) -> None:
        channel = conn.channel
        with self.lock:
            if frame.kind == wire.SEND:
                channel.inbox.append(_Message(conn, frame.msg_id, frame.body))
            elif frame.kind == wire.PULSE:
                pulse = Pulse.unpack(frame.body)
                pulse.pid, pulse.uid, pulse.gid = conn.pid, conn.uid, conn.gid
                pulse.scoid = conn.scoid
                channel.inbox.append(pulse)
            elif frame.kind == wire.UNBLOCK:
                self._unblock(conn, frame.msg_id)
            else:  # REPLY/ERROR travel the other way only
                self._answer(conn, wire.encode_error(frame.msg_id, errno.EBADMSG))

    def _unblock(self, conn: _ServerConn, msg_id: int) -> None:
        channel = conn.channel
        for item in channel.inbox:
            if isinstance(item, _Message) and item.conn is conn and item.msg_id == msg_id:
                channel.inbox.remove(item)  # never received: SEND-blocked, out at once
                self._answer(conn, wire.encode_error(msg_id, errno.EINTR))
                return
        for rcvid, item in self.rcvids.items():
            if item.conn is conn and item.msg_id == msg_id:
                if channel.flags & c._NTO_CHF_UNBLOCK:
                    channel.inbox.append(self._kernel_pulse(c._PULSE_CODE_UNBLOCK, rcvid, conn.scoid))
                else:  # the server did not ask to decide: the kernel lets the client go
                    del self.rcvids[rcvid]
                    self._answer(conn, wire.encode_error(msg_id, errno.EINTR))
                return

    def _close_server_conn(self, conn: _ServerConn, report: bool) -> None:
        conn.closed = True
        conn.channel.conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        refs = self.scoid_refs.get(conn.scoid, 1) - 1
        self.scoid_refs[conn.scoid] = refs
        if refs == 0:
            self.scoid_of_pid.pop(conn.pid, None)
            if report and conn.channel.flags & c._NTO_CHF_DISCONNECT:
                conn.channel.inbox.append(
                    self._kernel_pulse(c._PULSE_CODE_DISCONNECT, conn.scoid, conn.scoid))
            else:
                del self.scoid_refs[conn.scoid]  # nobody will ConnectDetach it

    def _coid_died(self, channel: _Channel, conn: _Connection) -> None:
        with self.lock:
            if conn.dead or self.connections.get(conn.coid) is not conn:
                return
            conn.dead = True
            channel.inbox.append(self._kernel_pulse(c._PULSE_CODE_COIDDEATH, conn.coid))

    def _kernel_pulse(self, code: int, value: int, scoid: int = 0) -> Pulse:
        return Pulse(code=code, value=wire.to_int32(value), scoid=scoid, pid=self.pid,
                     uid=os.getuid(), gid=os.getgid())

    def _answer(self, conn: _ServerConn, data: bytes) -> bool:
        with conn.send_lock:
            try:
                conn.sock.send(data, socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
                return True
            except OSError:
                return False

    def msg_reply(self, rcvid: int, status: int, msg: bytes) -> None:
        self._finish(rcvid, lambda msg_id: wire.encode_reply(msg_id, status, msg))

    def msg_error(self, rcvid: int, err: int) -> None:
        if not 0 <= err < 4096:
            raise _oserror(errno.EINVAL, f"error {err}")
        self._finish(rcvid, lambda msg_id: wire.encode_error(msg_id, err))

    def _finish(self, rcvid: int, encode) -> None:
        with self.lock:
            item = self.rcvids.get(rcvid)
        if item is None:
            raise _oserror(errno.ESRCH, f"rcvid {rcvid} is not waiting for a reply")
        try:  # before the rcvid is used up: a reply too big leaves the client waiting for another
            data = encode(item.msg_id)
        except wire.ProtocolError as bad:
            raise _oserror(bad.errno, str(bad)) from None
        with self.lock:
            if self.rcvids.pop(rcvid, None) is not item:
                raise _oserror(errno.ESRCH, f"rcvid {rcvid} is not waiting for a reply")
        if item.conn.closed or not self._answer(item.conn, data):
            raise _oserror(errno.ESRCH, f"the client of rcvid {rcvid} is gone")

    # ---- threads --------------------------------------------------------------------

    def thread_died(self, tid: int) -> None:
        with self.lock:
            channel = self.channels.get(self.thread_death_chid)
            if channel is None:
                return
            channel.inbox.append(self._kernel_pulse(c._PULSE_CODE_THREADDEATH, tid))
            os.eventfd_write(channel.wake_fd, 1)

    def forget_after_fork(self) -> None:
        """A forked child owns none of its parent's channels or connections (as on QNX)."""
        for channel in self.channels.values():
            channel.listener.close()
            os.close(channel.wake_fd)
            for conn in channel.conns.values():
                conn.sock.close()
        for conn in self.connections.values():
            conn.sock.close()
        self.__init__()


kernel = Kernel()


# ---- thread ids and THREADDEATH ---------------------------------------------------------

_tid_lock = threading.Lock()
_tids = {threading.main_thread().ident: 1}
_next_tid = [2]
_original_start = _thread.start_new_thread


def _start_new_thread(function, args, kwargs=None):
    with _tid_lock:
        tid = _next_tid[0]
        _next_tid[0] += 1

    def run(*a, **kw):
        _tids[threading.get_ident()] = tid
        try:
            return function(*a, **kw)
        finally:
            _tids.pop(threading.get_ident(), None)
            kernel.thread_died(tid)

    return _original_start(run, args, kwargs or {})


def gettid() -> int:
    """This thread's QNX-style id (1 for the main thread), as THREADDEATH pulses report it."""
    return _tids.get(threading.get_ident(), 0)


def _after_fork_in_child() -> None:
    kernel.forget_after_fork()
    _tids.clear()
    _tids[threading.get_ident()] = 1
    _next_tid[0] = 2


_thread.start_new_thread = _thread.start_new = _start_new_thread
threading._start_new_thread = _start_new_thread
os.register_at_fork(after_in_child=_after_fork_in_child)
