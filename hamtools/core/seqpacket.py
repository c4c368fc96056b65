"""The socket side of hamtools' SEQPACKET peers (neutrino channels, ham's sockets), shared by
servers and clients: one datagram at a time, and who is at the other end."""

import _socket
import struct

CREDS = struct.Struct("3i")


def peer_credentials(sock: _socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the peer, fixed when it connected (SO_PEERCRED)."""
    return CREDS.unpack(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, CREDS.size))


def read_datagram(sock: _socket.socket, size: int, flags: int = 0) -> tuple[bytes, bool] | None:
    """The next datagram and whether the kernel truncated it; b"" at EOF (or a reset);
    None when nothing is waiting on a non-blocking socket."""
    try:
        data, _, msg_flags, _ = sock.recvmsg(size, 0, flags)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b"", False
    return data, bool(msg_flags & _socket.MSG_TRUNC)
