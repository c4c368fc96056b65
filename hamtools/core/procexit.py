"""Exit statuses of processes that are not our children, from the kernel's process connector.

A pidfd says that a process ended, never how: only its parent can wait for it. The netlink
process connector (NETLINK_CONNECTOR, CN_IDX_PROC) reports every task's exit with its wait
status, to a listener with CAP_NET_ADMIN in the initial network namespace. The kernel sends
that report (proc_exit_connector) before it wakes the pidfd's pollers (exit_notify), so when
a pidfd fires, the status is already queued on the socket: read() then answers.

It hears every exit on the system, so it is open only while something is watched (and read
as reports come, or a busy system's would overflow its buffer and drop ours); where it
cannot be opened (no privilege, a network namespace, no CONFIG_PROC_EVENTS), statuses stay
unknown, as before. Not a hot path: struct is fine here.
"""

import os
import struct
import _socket

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXIT = 0x80000000
NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp
EXIT = struct.Struct("=IIII")  # pid, tgid, exit_code (a wait status), exit_signal
NLMSG_DONE = 3
EVENT_AT = NLMSG_HEADER.size + CN_MSG.size


class ExitReports:
    """Listen while watched is non-empty; status(pid) is the wait status of a watched
    process that has exited, if the kernel told us."""

    def __init__(self, loop):
        self.loop = loop
        self.sock = None
        self.watched: set[int] = set()
        self._statuses: dict[int, int] = {}
        self.failed = None  # why it could not be opened, once

    def watch(self, pid: int) -> None:
        self.watched.add(pid)
        if self.sock is None and self.failed is None:
            self._open()

    def unwatch(self, pid: int) -> None:
        self.watched.discard(pid)
        self._statuses.pop(pid, None)
        if not self.watched:
            self.close()

    def status(self, pid: int) -> int | None:
        self.read()
        return self._statuses.pop(pid, None)

    def read(self) -> None:
        """Take every queued report (the socket is non-blocking), keeping the watched ones."""
        while self.sock is not None:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:  # ENOBUFS: reports were dropped; the next ones still come
                continue
            at = 0
            while at + EVENT_AT + EVENT.size <= len(data):
                length = NLMSG_HEADER.unpack_from(data, at)[0]
                what = EVENT.unpack_from(data, at + EVENT_AT)[0]
                if what == PROC_EVENT_EXIT and at + EVENT_AT + EVENT.size + EXIT.size <= len(data):
                    _, tgid, code, _ = EXIT.unpack_from(data, at + EVENT_AT + EVENT.size)
                    if tgid in self.watched:  # the last thread's report is the process's
                        self._statuses[tgid] = code
                if length <= 0:
                    break
                at += (length + 3) & ~3

    def _open(self) -> None:
        try:
            sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC
                                  | _socket.SOCK_NONBLOCK, NETLINK_CONNECTOR)
        except OSError as err:
            self.failed = err.strerror
            return
        try:
            sock.bind((0, CN_IDX_PROC))
            listen = struct.pack("=I", PROC_CN_MCAST_LISTEN)
            message = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(listen), 0) + listen
            sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(message), NLMSG_DONE, 0, 0, os.getpid()) + message)
        except OSError as err:
            sock.close()
            self.failed = err.strerror
            return
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self.read)

    def close(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        self._statuses.clear()
