"""`heartbeat`: heartbeats for ham from shell scripts (SPEC §6).

The one-shot form is a hot path: it imports neither typer nor psutil, nor even the socket
module (the C `_socket` does), and makes one request/answer round trip on ham's client socket.
"""

import errno
import os

from hamtools.core import runtime, wire
from hamtools.core.errors import EXIT_NOT_RUNNING, EXIT_USAGE, AppletError

USAGE = """\
Usage: heartbeat NAME
       heartbeat --every SECS [--while-pid PID] NAME
       heartbeat                      (with NOTIFY_SOCKET set: sd_notify WATCHDOG=1)

Send one heartbeat to ham for entity NAME (QNX ham_heartbeat). Exit 0 when ham took it,
1 when this process may not beat for NAME, 3 when ham is not running or NAME is unknown.
ham's sockets live in $HAM_RUNTIME_DIR (default /run/ham).

Status: the one-shot form is built; --every and the sd_notify form are not built yet.
"""

ANSWER_TIMEOUT = 5.0  # seconds; ham answers at once unless it is wedged


def main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(USAGE, end="")
        return 0
    if len(argv) == 1 and not argv[0].startswith("-"):
        return beat_once(argv[0])
    if not argv or argv[0] == "--every":
        raise AppletError("--every and the sd_notify form are not built yet in this version")
    raise AppletError(f"usage: heartbeat NAME (see heartbeat --help)", EXIT_USAGE)


def beat_once(name: str) -> int:
    status, _ = request(b"heartbeat " + name.encode())
    if status == 0:
        return 0
    if status in (errno.EPERM, errno.EACCES):
        raise AppletError(f"{name}: not authorised to beat for this entity")
    if status == errno.ENOENT:
        raise AppletError(f"{name}: ham has no such entity", EXIT_NOT_RUNNING)
    raise AppletError(f"{name}: {os.strerror(status)}")


def request(body: bytes) -> tuple[int, bytes]:
    """One round trip on ham's client socket: (0, reply) or (errno, b"") from ham."""
    import _socket

    path = runtime.client_socket()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise AppletError(f"ham is not running (nothing listens on {path})",
                              EXIT_NOT_RUNNING) from None
        except PermissionError:
            raise AppletError(f"connect {path}: permission denied") from None
        sock.send(wire.encode(wire.SEND, 1, body))
        data = sock.recv(wire.MAX_FRAME)
    except TimeoutError:
        raise AppletError(f"ham did not answer within {ANSWER_TIMEOUT:g} s") from None
    finally:
        sock.close()
    if not data:
        raise AppletError("ham closed the connection without answering", EXIT_NOT_RUNNING)
    try:
        frame = wire.decode_datagram(data)
    except wire.ProtocolError as bad:
        raise AppletError(f"unreadable answer from ham: {bad}") from None
    status, reply = wire.decode_status(frame)
    if frame.kind == wire.ERROR:
        return status, b""
    return (-status, reply) if status < 0 else (0, reply)  # ham's failures: REPLY -errno
