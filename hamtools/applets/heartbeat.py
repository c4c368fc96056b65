"""`heartbeat`: heartbeats for ham from shell scripts (SPEC §6), or sd_notify WATCHDOG=1.

The one-shot form is a hot path: it imports neither typer nor psutil, nor even the socket
module (the C `_socket` does), and makes one request/answer round trip on ham's client socket.
Options are parsed by hand for the same reason.
"""

import errno
import os

from hamtools.core import runtime, wire
from hamtools.core.errors import EXIT_NOT_RUNNING, EXIT_USAGE, AppletError

USAGE = """\
Usage: heartbeat NAME
       heartbeat --every SECS [--while-pid PID] [NAME]
       heartbeat                      (with NOTIFY_SOCKET set: sd_notify WATCHDOG=1)

Send one heartbeat to ham for entity NAME (QNX ham_heartbeat; hamtools.ham.ham_heartbeat).
Exit 0 when ham took it, 1 when this process may not beat for NAME, 3 when ham is not
running or NAME is unknown. ham's sockets live in $HAM_RUNTIME_DIR (default /run/ham).

  --every SECS     keep beating every SECS seconds (fractions allowed) while PID lives;
                   exit 0 when it is gone, 3 when ham says NAME is gone, 1 when refused.
                   While ham is away (restarting) the feeder keeps trying.
  --while-pid PID  the process whose life the feeder follows (default: its parent)

Without NAME and with NOTIFY_SOCKET in the environment it speaks sd_notify instead, the
same one-shot or --every forms: each beat is one WATCHDOG=1 datagram, sent as root with the
credentials of its parent (like systemd-notify), so one script works under ham and under
systemd with NotifyAccess=main. Authorisation: root, or the entity's own uid from the
entity's process or one of its descendants.
"""

# The options _parse takes and what follows each; ARGUMENTS: what NAME is. Shell completion
# (hamtools.completion) reads both.
OPTIONS = {"--every": "SECS", "--while-pid": "PID", "-h": None, "--help": None}
ARGUMENTS = ("ENTITY",)

ANSWER_TIMEOUT = 5.0  # seconds; ham answers at once unless it is wedged


class _Away(Exception):
    """Nobody listens (ham not running, or gone mid-way): a feeder tries again later."""


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE, end="")
        return 0
    every, while_pid, name = _parse(argv)
    if name is None and not os.environ.get("NOTIFY_SOCKET"):
        raise AppletError("no NAME, and NOTIFY_SOCKET is not set (see heartbeat --help)", EXIT_USAGE)
    if every is not None:
        return feed(every, while_pid or os.getppid(), name)
    try:
        return beat_once(name) if name is not None else notify_once()
    except _Away as away:
        raise AppletError(str(away), EXIT_NOT_RUNNING) from None


def _parse(argv: list[str]) -> tuple[float | None, int | None, str | None]:
    every = while_pid = name = None
    args = iter(argv)
    for arg in args:
        option, has_value, value = arg.partition("=")
        if OPTIONS.get(option):
            value = value if has_value else next(args, None)
            if value is None:
                raise AppletError(f"{option} needs a value (see heartbeat --help)", EXIT_USAGE)
            if option == "--every":
                every = _positive(value, option, float)
            else:
                while_pid = _positive(value, option, int)
        elif arg.startswith("-") or name is not None:
            raise AppletError(f"unexpected argument {arg!r} (see heartbeat --help)", EXIT_USAGE)
        else:
            name = arg
    if while_pid is not None and every is None:
        raise AppletError("--while-pid goes with --every (see heartbeat --help)", EXIT_USAGE)
    return every, while_pid, name


def _positive(text: str, option: str, kind):
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not value > 0 or value != value or value == float("inf"):
        raise AppletError(f"{option} {text}: must be a positive {kind.__name__}", EXIT_USAGE)
    return value


# ---- ham's client protocol -----------------------------------------------------------------

def beat_once(name: str) -> int:
    sock = _connect()
    try:
        return _check(name, _ask(sock, b"heartbeat " + name.encode()))
    finally:
        sock.close()


def _check(name: str, status: int) -> int:
    if status == 0:
        return 0
    if status in (errno.EPERM, errno.EACCES):
        raise AppletError(f"{name}: not authorised to beat for this entity")
    if status == errno.ENOENT:
        raise AppletError(f"{name}: ham has no such entity", EXIT_NOT_RUNNING)
    raise AppletError(f"{name}: {os.strerror(status)}")


def _connect():
    import _socket

    path = runtime.client_socket()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    sock.settimeout(ANSWER_TIMEOUT)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise _Away(f"ham is not running (nothing listens on {path})") from None
    except PermissionError:
        sock.close()
        raise AppletError(f"connect {path}: permission denied") from None
    return sock


def _ask(sock, body: bytes) -> int:
    """One request/answer round trip: 0, or the errno ham answered."""
    try:
        sock.send(wire.encode(wire.SEND, 1, body))
        data = sock.recv(wire.MAX_FRAME)
    except TimeoutError:
        raise AppletError(f"ham did not answer within {ANSWER_TIMEOUT:g} s") from None
    except OSError:
        data = b""
    if not data:
        raise _Away("ham closed the connection without answering")
    try:
        frame = wire.decode_datagram(data)
        status, _ = wire.decode_status(frame)
    except wire.ProtocolError as bad:
        raise AppletError(f"unreadable answer from ham: {bad}") from None
    if frame.kind == wire.ERROR:
        return status
    return -status if status < 0 else 0  # ham's failures: REPLY -errno


# ---- sd_notify ---------------------------------------------------------------------------

def notify_once() -> int:
    sock = _notify_socket()
    try:
        _notify(sock)
    finally:
        sock.close()
    return 0


def _notify_socket():
    from hamtools.core import sdnotify

    try:
        return sdnotify.connect(os.environ["NOTIFY_SOCKET"])
    except sdnotify.Unreachable as away:
        raise _Away(str(away)) from None
    except OSError as err:
        raise AppletError(f"NOTIFY_SOCKET {os.environ['NOTIFY_SOCKET']}: {err.strerror}") from None


def _notify(sock) -> None:
    """WATCHDOG=1, naming our parent (the script) where the kernel allows it (as root)."""
    from hamtools.core import sdnotify

    try:
        sdnotify.send(sock, "WATCHDOG=1", as_pid=os.getppid())
    except sdnotify.Unreachable as away:
        raise _Away(str(away)) from None
    except OSError as err:
        raise AppletError(f"sd_notify: {err.strerror}") from None


# ---- the feeder ---------------------------------------------------------------------------

def feed(every: float, while_pid: int, name: str | None) -> int:
    """Beat every `every` seconds while while_pid lives (a pidfd says when it ends)."""
    import select

    try:
        pidfd = os.pidfd_open(while_pid)
    except ProcessLookupError:
        return 0  # already gone: nothing to keep alive
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    sock = None
    try:
        while True:
            try:
                if sock is None:
                    sock = _connect() if name is not None else _notify_socket()
                if name is not None:
                    _check(name, _ask(sock, b"heartbeat " + name.encode()))
                else:
                    _notify(sock)
            except _Away:  # ham went away (a takeover, a restart): a new connection next time
                if sock is not None:
                    sock.close()
                    sock = None
            if poller.poll(every * 1000):
                return 0
    finally:
        os.close(pidfd)
        if sock is not None:
            sock.close()

