"""What sockmon watches: parse `unix:PATH`, `tcp:HOST:PORT`, `pid:PID`, `name:PROG`, connect.

A connection attempt always reports back through the event loop (never from inside
connect()), so a watch's state machine sees one order of events whatever the target.
Every socket and fd is non-blocking and close-on-exec: a restart script never inherits one
(an inherited copy would hide the server's death, linux_primitives.md #3).
"""

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from hamtools.core.errors import describe_oserror
from hamtools.core.proc import Process

CONNECT_TIMEOUT = 5.0  # seconds for one TCP connect attempt
SO_PEERPIDFD = 77  # Linux 6.5+, not exported by Python 3.11
DEFAULT_TCP_TIMEOUT = 30  # seconds: keepalive + TCP_USER_TIMEOUT notice a silent peer by then


class TargetError(ValueError):
    """A TARGET that cannot be parsed; the message says why."""


@dataclass(frozen=True, slots=True)
class Lost:
    """How a watched link ended. reason is one word (it becomes SOCKMON_REASON)."""

    reason: str  # eof | reset | timeout | error | exited
    detail: str


class SocketLink:
    """A connection to the server, plus the server process itself when the kernel names it."""

    def __init__(self, sock: socket.socket, peer: Process | None):
        self.sock = sock
        self.peer = peer

    def read_event(self) -> Lost | None:
        """The socket is readable: swallow whatever the server says; say if the link ended."""
        return self._recv(0)

    def peek(self) -> Lost | None:
        """Has the link ended? Reads nothing."""
        return self._recv(socket.MSG_PEEK)

    def _recv(self, flags: int) -> Lost | None:
        try:
            data = self.sock.recv(65536, flags | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        except OSError as err:
            return lost_from_error(err)
        return Lost("eof", "the server closed the connection") if not data else None

    def describe(self) -> str:
        return f"server pid {self.peer.pid}" if self.peer is not None else "server pid unknown"

    def close(self, keep_peer: bool = False) -> None:
        self.sock.close()
        if self.peer is not None and not keep_peer:
            self.peer.close()


class ProcessLink:
    """A server process held by its pidfd (pid: and name: targets)."""

    def __init__(self, proc: Process):
        self.proc = proc
        self.peer = proc

    def describe(self) -> str:
        return f"pid {self.proc.pid}"

    def close(self, keep_peer: bool = False) -> None:
        if not keep_peer:
            self.proc.close()


Link = SocketLink | ProcessLink
Done = Callable[[Link | None, str], None]  # (link, "") on success, (None, why) on failure


def lost_from_error(err: OSError) -> Lost:
    reason = {errno.ECONNRESET: "reset", errno.EPIPE: "reset", errno.ETIMEDOUT: "timeout"}
    return Lost(reason.get(err.errno, "error"), describe_oserror(err))


class Attempt:
    """One connection attempt in flight; cancel() forgets it (its result is never reported)."""

    def __init__(self, loop, done: Done):
        self.loop = loop
        self._done: Done | None = done
        self._on_cancel: list[Callable[[], object]] = []

    def finish(self, link: Link | None, why: str = "") -> None:
        done, self._done, self._on_cancel = self._done, None, []
        if done is not None:
            done(link, why)

    def finish_soon(self, link: Link | None, why: str = "") -> None:
        timer = self.loop.call_later(0, lambda: self.finish(link, why))
        self.on_cancel(timer.cancel)
        if link is not None:
            self.on_cancel(link.close)

    def on_cancel(self, step: Callable[[], object]) -> None:
        self._on_cancel.append(step)

    def cancel(self) -> None:
        steps, self._done, self._on_cancel = self._on_cancel, None, []
        for step in steps:
            step()


class Target:
    """Base: `text` is what the user wrote; once=True when a lost target cannot come back."""

    kind = ""
    once = False

    def __init__(self, text: str):
        self.text = text

    def connect(self, loop, done: Done) -> Attempt:
        attempt = Attempt(loop, done)
        try:
            link = self._connect_now()
        except OSError as err:
            attempt.finish_soon(None, self._why(err))
        else:
            attempt.finish_soon(link)
        return attempt

    def _connect_now(self) -> Link:
        raise NotImplementedError

    def _why(self, err: OSError) -> str:
        return describe_oserror(err)

    def __str__(self) -> str:
        return self.text


class UnixTarget(Target):
    """unix:PATH (or unix:@NAME for an abstract socket); stream first, then seqpacket."""

    kind = "unix"

    def __init__(self, text: str, path: str):
        super().__init__(text)
        # absolute now: --daemon changes to / before the first connect
        self.address = "\0" + path[1:] if path.startswith("@") else os.path.abspath(path)

    def _connect_now(self) -> Link:
        for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET):
            sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            try:
                sock.connect(self.address)
            except OSError as err:
                sock.close()
                if err.errno == errno.EPROTOTYPE:  # the listener is of the other type
                    continue
                if err.errno == errno.EAGAIN:
                    raise OSError(errno.EAGAIN, "the listen queue is full") from None
                raise
            return SocketLink(sock, peer_process(sock))
        raise OSError(errno.EPROTOTYPE, "neither a stream nor a seqpacket socket")


class TcpTarget(Target):
    """tcp:HOST:PORT ([v6] in brackets); keepalive and TCP_USER_TIMEOUT see a silent peer."""

    kind = "tcp"

    def __init__(self, text: str, host: str, port: int, tcp_timeout: int = DEFAULT_TCP_TIMEOUT):
        super().__init__(text)
        self.host = host
        self.port = port
        self.tcp_timeout = tcp_timeout

    def connect(self, loop, done: Done) -> Attempt:
        attempt = Attempt(loop, done)
        try:
            # Resolving a name may block; a numeric HOST never does (documented).
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_STREAM)[0]
        except (socket.gaierror, UnicodeError) as err:
            attempt.finish_soon(None, f"resolve {self.host}: {getattr(err, 'strerror', None) or err}")
            return attempt
        sock = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
        set_tcp_liveness(sock, self.tcp_timeout)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            attempt.finish_soon(None, os.strerror(code).lower())
            return attempt

        fd = sock.fileno()

        def settle() -> None:  # stop waiting on this attempt
            loop.remove_writer(fd)
            timer.cancel()

        def connected() -> None:
            settle()
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                sock.close()
                attempt.finish(None, os.strerror(code).lower())
            else:
                attempt.finish(SocketLink(sock, None))

        def timed_out() -> None:
            settle()
            sock.close()
            attempt.finish(None, "connection timed out")

        loop.add_writer(fd, connected)
        timer = loop.call_later(CONNECT_TIMEOUT, timed_out)
        attempt.on_cancel(settle)
        attempt.on_cancel(sock.close)
        return attempt


def set_tcp_liveness(sock: socket.socket, timeout: int) -> None:
    """Keepalive probes after timeout/3 idle, 3 of them; unacknowledged data fails by timeout."""
    idle = max(1, timeout // 3)
    interval = max(1, (timeout - idle) // 3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout * 1000)


def peer_process(sock: socket.socket) -> Process | None:
    """The process that listens on the other end, held by pidfd; None if unknown or gone.

    SO_PEERPIDFD (Linux 6.5+) is race-free; older kernels: SO_PEERCRED's pid, verified.
    Only local sockets have one; a peer in another pid namespace reads as pid 0 (unknown).
    """
    try:
        proc = Process.from_pidfd(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD))
    except OSError:
        pid = int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)[:4],
                             "little", signed=True)
        try:
            proc = Process.open(pid)
        except (OSError, ValueError):
            return None
    if proc.pid <= 0 or proc.pid == os.getpid() or proc.exited() or proc.ident.start == 0:
        proc.close()
        return None
    return proc


class PidTarget(Target):
    """pid:PID watches that process (it cannot come back: once); pid:/FILE re-reads a pidfile."""

    kind = "pid"

    def __init__(self, text: str, pid: int | None = None, pidfile: str | None = None):
        super().__init__(text)
        self.pid = pid
        self.pidfile = pidfile
        self.once = pidfile is None

    def _connect_now(self) -> Link:
        pid = self.pid if self.pidfile is None else read_pidfile(self.pidfile)
        return ProcessLink(open_living(pid))


def read_pidfile(path: str) -> int:
    with open(path) as handle:
        text = handle.read().strip()
    if not text.isdigit() or int(text) <= 0:
        raise OSError(errno.EINVAL, f"{path} does not hold a pid")
    return int(text)


def open_living(pid: int) -> Process:
    try:
        proc = Process.open(pid)
    except ProcessLookupError:
        raise OSError(errno.ESRCH, f"no process {pid}") from None
    if proc.exited():
        proc.close()
        raise OSError(errno.ESRCH, f"process {pid} has exited")
    return proc


class NameTarget(Target):
    """name:PROG follows the oldest process called PROG (like pgrep -o: name, exe or argv0)."""

    kind = "name"

    def __init__(self, text: str, prog: str):
        super().__init__(text)
        self.prog = prog

    def _connect_now(self) -> Link:
        pid = find_process(self.prog)
        if pid is None:
            raise OSError(errno.ESRCH, f"no process named {self.prog}")
        return ProcessLink(open_living(pid))


def psutil_problem() -> str | None:
    """Why name: targets cannot work here, or None when psutil imports."""
    try:
        import psutil  # noqa: F401  (native; imported only for name: targets)
    except ImportError as err:
        return f"name: targets need psutil ({err})"
    return None


def find_process(prog: str) -> int | None:
    import psutil

    best: tuple[float, int] | None = None
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "exe", "cmdline", "create_time", "status"]):
        info = proc.info
        if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        names = {info["name"], os.path.basename(info["exe"] or "")}
        if info["cmdline"]:
            names.add(os.path.basename(info["cmdline"][0]))
        if prog in names:
            key = (info["create_time"] or 0.0, info["pid"])
            best = key if best is None or key < best else best
    return None if best is None else best[1]


def parse_target(text: str, *, tcp_timeout: int = DEFAULT_TCP_TIMEOUT) -> Target:
    """Parse a TARGET; raises TargetError with a message that says what is wrong."""
    kind, sep, rest = text.partition(":")
    if not sep:
        raise TargetError(f"{text!r}: expected unix:PATH, tcp:HOST:PORT, pid:PID or name:PROG")
    if kind == "unix":
        if rest in ("", "@"):
            raise TargetError(f"{text!r}: the socket path is empty")
        if len(rest.encode()) > 107:
            raise TargetError(f"{text!r}: a socket path holds at most 107 bytes")
        return UnixTarget(text, rest)
    if kind == "tcp":
        host, port = _split_host_port(text, rest)
        return TcpTarget(text, host, port, tcp_timeout)
    if kind == "pid":
        if rest.startswith("/"):
            return PidTarget(text, pidfile=rest)
        if not rest.isdigit() or int(rest) <= 0:
            raise TargetError(f"{text!r}: PID must be a positive number (or pid:/path/to/pidfile)")
        return PidTarget(text, pid=int(rest))
    if kind == "name":
        if not rest or "/" in rest:
            raise TargetError(f"{text!r}: PROG must be a program name without '/'")
        return NameTarget(text, rest)
    raise TargetError(f"{text!r}: unknown kind {kind!r} (unix, tcp, pid or name)")


def _split_host_port(text: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        host, bracket, port = rest[1:].partition("]:")
        if not bracket:
            raise TargetError(f"{text!r}: expected tcp:[IPV6]:PORT")
    else:
        host, colon, port = rest.rpartition(":")
        if not colon or ":" in host:
            raise TargetError(f"{text!r}: expected tcp:HOST:PORT (IPv6 in brackets)")
    if not host:
        raise TargetError(f"{text!r}: the host is empty")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetError(f"{text!r}: PORT must be 1-65535")
    return host, int(port)
