"""systemd's notification protocol (sd_notify(3)), both ends, with no policy.

The sender: a datagram of newline-separated KEY=VALUE assignments to the AF_UNIX socket named
by $NOTIFY_SOCKET (a path, or @name for the abstract namespace), with the sender's
credentials; as root it may name another pid (systemd-notify names its parent).
The receiver's parser: parse() turns a datagram into its assignments.

Lean on purpose (`_socket`, not `socket`): the heartbeat one-shot and the ham daemon use it.
"""

import _socket
import os
import struct

MAX_MESSAGE = 4096  # systemd's NOTIFY_BUFFER_MAX (PIPE_BUF): longer datagrams are dropped
CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


class Unreachable(OSError):
    """Nobody listens on the notify socket (or it names no usable address)."""


def address(value: str) -> str:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise Unreachable(f"NOTIFY_SOCKET={value}: only path and @abstract sockets are supported")


def connect(value: str):
    """A datagram socket connected to the NOTIFY_SOCKET value."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(address(value))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise Unreachable(f"nothing listens on NOTIFY_SOCKET {value}") from None
    except OSError:
        sock.close()
        raise
    return sock


def send(sock, message: str, as_pid: int | None = None) -> None:
    """Send message; with as_pid, in that process's name where the kernel allows it (root),
    else in our own, as systemd-notify falls back to."""
    data = message.encode()
    try:
        if as_pid is not None:
            creds = CREDENTIALS.pack(as_pid, os.getuid(), os.getgid())
            try:
                sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_CREDENTIALS, creds)])
                return
            except PermissionError:
                pass
        sock.send(data)
    except ConnectionRefusedError:
        raise Unreachable("nothing listens on the notify socket any more") from None


def parse(data: bytes) -> dict[str, str]:
    """The assignments of one datagram (later ones win; lines without '=' are ignored, as
    systemd ignores what it does not know). ValueError when it is not UTF-8 text."""
    if b"\0" in data:
        raise ValueError("a notification holds a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a notification that is not UTF-8") from None
    fields = {}
    for line in text.split("\n"):
        key, has_value, value = line.partition("=")
        if has_value and key:
            fields[key] = value
    return fields
