"""A recovering socket: libha's idea applied to a socket to a server that ham restarts (an
extension; QNX's libha covers MsgSend, and a socket there is a resource manager connection).

    def recover(fd, address):
        return ha_reconnect(fd, address)           # same fd number, connected afresh

    sock = ha_socket(socket.create_connection(addr), recover, addr, 0)
    sock.sendall(request)                          # EPIPE: the server died; recovered, resent
    reply = sock.recv(4096)

An operation that fails with one of cover.RECOVERABLE (EPIPE, ECONNRESET, ECONNREFUSED,
ENOTCONN...) or a recv that sees the stream end (the server died: its kernel closed the
connection) calls the recovery function and is retransmitted, within the counts of
ha_connection_ctrl. The function must reconnect under the same fd number (ha_reconnect does)
and rebuild whatever state the server kept for the connection. Past the counts the original
error is raised, and a recv that saw the end returns b"" (its original result).
"""

import fcntl
import os
import socket
from typing import Self

from hamtools.ha import cover

_STREAMS = (socket.SOCK_STREAM, socket.SOCK_SEQPACKET)


def ha_reconnect(oldfd: int, address, timeout: float | None = None) -> int:
    """For recovery functions, the socket twin of ha_reopen: connect a new socket of oldfd's
    family, type and protocol to address and dup2 it over oldfd (keeping oldfd's O_NONBLOCK,
    so a socket object's timeout still holds). Returns oldfd; connect()'s errors, and then
    oldfd is left as it was."""
    with socket.socket(fileno=os.dup(oldfd)) as old:
        family, kind, proto = old.family, old.type, old.proto
    flags = fcntl.fcntl(oldfd, fcntl.F_GETFL)
    inheritable = os.get_inheritable(oldfd)
    with socket.socket(family, kind, proto) as fresh:
        fresh.settimeout(timeout)
        fresh.connect(address)
        fcntl.fcntl(fresh.fileno(), fcntl.F_SETFL, flags)
        os.dup2(fresh.fileno(), oldfd, inheritable=inheritable)
    return oldfd


class HaSocket:
    """A socket.socket whose send/recv family recovers (ha_attach on its fd); every other
    attribute is the socket's own. Close it with close() (ha_detach, then close)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._eof_ends = sock.type in _STREAMS

    def __getattr__(self, name):
        return getattr(self.sock, name)

    def _run(self, operation):
        return cover.run(self.sock.fileno(), operation)

    def _ended(self, result, empty):
        if self._eof_ends and empty:
            raise cover.Eof(result)
        return result

    def send(self, data, flags: int = 0) -> int:
        return self._run(lambda: self.sock.send(data, flags | socket.MSG_NOSIGNAL))

    def sendall(self, data, flags: int = 0) -> None:
        return self._run(lambda: self.sock.sendall(data, flags | socket.MSG_NOSIGNAL))

    def sendmsg(self, buffers, ancdata=(), flags: int = 0, address=None) -> int:
        args = (buffers, ancdata, flags | socket.MSG_NOSIGNAL) + ((address,) if address is not None else ())
        return self._run(lambda: self.sock.sendmsg(*args))

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        def once():
            data = self.sock.recv(bufsize, flags)
            return self._ended(data, bufsize and not data)
        return self._run(once)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        def once():
            got = self.sock.recv_into(buffer, nbytes, flags)
            return self._ended(got, (nbytes or len(buffer)) and not got)
        return self._run(once)

    def recvmsg(self, bufsize: int, ancbufsize: int = 0, flags: int = 0):
        def once():
            got = self.sock.recvmsg(bufsize, ancbufsize, flags)
            return self._ended(got, bufsize and not got[0] and not got[1])
        return self._run(once)

    def close(self) -> None:
        try:
            cover.ha_detach(self.sock.fileno())
        except OSError:
            pass  # not attached (any more)
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ha_socket(sock: socket.socket, rfn, rhdl, haflags: int) -> HaSocket:
    """ha_attach(sock.fileno(), rfn, rhdl, haflags) and the recovering wrapper of sock; its
    fd is the coid of ha_connection_ctrl and of the recovery function's first argument."""
    cover.ha_attach(sock.fileno(), rfn, rhdl, haflags)
    return HaSocket(sock)
