"""Daemon logging: syslog as `PROG[pid]` (LOG_DAEMON) and/or stderr, one line per message.

syslog is spoken directly on /dev/log (RFC 3164 datagrams, the way glibc's syslog() does)
instead of through the stdlib module, because a supervisor logs exactly when things are
going wrong: sending never blocks (a full or missing syslogd drops the line and counts it),
and a restarted syslogd is reconnected on the next line. $HAMTOOLS_SYSLOG_SOCKET names
another socket (tests, containers).
"""

import os
import socket
import sys
import time

LOG_DAEMON = 3 << 3
LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 3, 4, 5, 6, 7
DEFAULT_SOCKET = "/dev/log"


class Syslog:
    """A non-blocking /dev/log client; send() never raises and never waits."""

    def __init__(self, ident: str, *, facility: int = LOG_DAEMON, path: str | None = None,
                 pid: int | None = None):
        self.ident = ident
        self.pid = pid  # whose lines these are (a service's output); None: our own
        self.facility = facility
        self.path = path or os.environ.get("HAMTOOLS_SYSLOG_SOCKET") or DEFAULT_SOCKET
        self.dropped = 0
        self._sock: socket.socket | None = None
        self._stream = False

    def _connect(self) -> bool:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            sock = socket.socket(socket.AF_UNIX, kind | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                continue
            self._sock, self._stream = sock, kind == socket.SOCK_STREAM
            return True
        return False

    def format(self, priority: int, message: str, now: float | None = None) -> bytes:
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(now))
        if stamp[4] == "0":  # RFC 3164 pads the day with a space
            stamp = stamp[:4] + " " + stamp[5:]
        line = f"<{self.facility | priority}>{stamp} {self.ident}[{self.pid or os.getpid()}]: {message}"
        return line.encode("utf-8", "replace") + (b"\0" if self._stream else b"")

    def send(self, priority: int, message: str) -> bool:
        for _attempt in range(2):  # the second time on a fresh connection (syslogd restarted)
            if self._sock is None and not self._connect():
                break
            try:
                self._sock.send(self.format(priority, message))
                return True
            except BlockingIOError:
                break  # syslogd is not keeping up: drop rather than stall the daemon
            except OSError:
                self.close()
        self.dropped += 1
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Log:
    """Where an applet's messages go: stderr (`PROG[pid]: msg`), syslog, or both."""

    def __init__(self, ident: str, *, stderr: bool = True, syslog: bool = True,
                 facility: int = LOG_DAEMON, syslog_path: str | None = None):
        self.ident = ident
        self.stderr = stderr
        self.syslog = Syslog(ident, facility=facility, path=syslog_path) if syslog else None

    def log(self, priority: int, message: str) -> None:
        if self.stderr:
            try:
                sys.stderr.write(f"{self.ident}[{os.getpid()}]: {message}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stderr must not take the daemon down
        if self.syslog is not None:
            self.syslog.send(priority, message)

    def error(self, message: str) -> None:
        self.log(LOG_ERR, message)

    def warning(self, message: str) -> None:
        self.log(LOG_WARNING, message)

    def notice(self, message: str) -> None:
        self.log(LOG_NOTICE, message)

    def info(self, message: str) -> None:
        self.log(LOG_INFO, message)

    def close(self) -> None:
        if self.syslog is not None:
            self.syslog.close()
