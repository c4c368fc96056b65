"""ham under a service manager that speaks sd_notify (systemd Type=notify with WatchdogSec=,
or another ham): READY=1 with MAINPID= once ham's sockets are up, WATCHDOG=1 every half
WATCHDOG_USEC, STOPPING=1 when it stops.

The variables are taken out of ham's environment at once, so the processes ham starts see
ham's own notify socket, never its manager's (hamd.notify).
"""

import os

from hamtools.core import sdnotify


class Manager:
    def __init__(self, socket_value: str, watchdog_usec: int | None, log):
        self.socket_value = socket_value
        self.watchdog_usec = watchdog_usec
        self.log = log
        self.sock = None
        self._timer = None

    @classmethod
    def from_environment(cls, log) -> "Manager | None":
        value = os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        meant_for = os.environ.pop("WATCHDOG_PID", None)
        if not value:
            return None
        try:
            watchdog = int(usec) if usec and (meant_for in (None, str(os.getpid()))) else None
        except ValueError:
            watchdog = None
        return cls(value, watchdog if watchdog and watchdog > 0 else None, log)

    def environment(self, main_pid: int | None = None) -> dict[str, str]:
        """What the next ham (a takeover, a re-exec) needs to find the manager again."""
        env = {"NOTIFY_SOCKET": self.socket_value}
        if self.watchdog_usec:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
            if main_pid is not None:
                env["WATCHDOG_PID"] = str(main_pid)
        return env

    def started(self, loop, status: str) -> None:
        self._send(f"READY=1\nMAINPID={os.getpid()}\nSTATUS={status}")
        if self.watchdog_usec:
            self._ping(loop)

    def _ping(self, loop) -> None:
        self._send("WATCHDOG=1")
        self._timer = loop.call_later(self.watchdog_usec / 2e6, lambda: self._ping(loop))

    def stopping(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._send("STOPPING=1")
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _send(self, message: str) -> None:
        try:
            if self.sock is None:
                self.sock = sdnotify.connect(self.socket_value)
            sdnotify.send(self.sock, message)
        except OSError as err:  # the manager went away: ham goes on without it
            self.log(1, f"sd_notify to {self.socket_value}: {err.strerror or err}")
            if self.sock is not None:
                self.sock.close()
                self.sock = None
