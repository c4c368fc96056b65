"""What one ham hands to the next in the same runtime directory, across an exec: the open
files that must never close (ham.lock, the listening sockets, the notify socket, the
hardware watchdog) and why the next one runs (a takeover by the guardian, or `hamctl reexec`).

The fds are inherited (no FD_CLOEXEC) and named in one environment variable,
HAM_HANDOVER="VERSION REASON FROM-PID NAME:FD... [guardian=PID/PIPE-FD]", which the receiving
ham takes out of its environment at once, so nothing it starts sees it. A re-exec keeps its
guardian running (it watches the same pid) until the new ham is up: a new ham that cannot
start is replaced by the guardian, with the code it was started from. Keeping the listening sockets open means a
client connecting during a takeover waits in the backlog instead of being refused; keeping
the watchdog fd means the device is never closed, so it neither stops nor complains.
"""

import os
import _socket

VARIABLE = "HAM_HANDOVER"
VERSION = "1"  # `hamctl reexec` refuses code that does not speak this one
REASONS = ("takeover", "reexec")


class Handover:
    __slots__ = ("reason", "from_pid", "fds", "guardian")

    def __init__(self, reason: str, from_pid: int, fds: dict[str, int],
                 guardian: tuple[int, int] | None = None):
        self.reason, self.from_pid, self.fds = reason, from_pid, fds
        self.guardian = guardian  # (pid, pipe fd) of the guardian kept across a re-exec

    def encode(self) -> str:
        words = [VERSION, self.reason, str(self.from_pid), *(f"{k}:{v}" for k, v in self.fds.items())]
        if self.guardian is not None:
            words.append("guardian=%d/%d" % self.guardian)
        return " ".join(words)

    @classmethod
    def decode(cls, text: str) -> "Handover | None":
        words = text.split()
        if len(words) < 3 or words[0] != VERSION or words[1] not in REASONS or not words[2].isdigit():
            return None
        fds, guardian = {}, None
        for word in words[3:]:
            if word.startswith("guardian="):
                pid, _, pipe = word[9:].partition("/")
                if not (pid.isdigit() and pipe.isdigit()):
                    return None
                guardian = (int(pid), int(pipe))
                continue
            name, _, fd = word.partition(":")
            if not fd.isdigit():
                return None
            fds[name] = int(fd)
        return cls(words[1], int(words[2]), fds, guardian)

    def take(self, name: str) -> int | None:
        """The fd inherited under name, made close-on-exec again (ours alone from now on), or
        None when there is none or it is not open."""
        fd = self.fds.pop(name, None)
        if fd is None:
            return None
        try:
            os.set_inheritable(fd, False)
        except OSError:
            return None
        return fd

    def take_socket(self, name: str, path: str, kind: int) -> _socket.socket | None:
        """The socket handed over as name, if it is still one of kind bound at path (someone
        may have removed or replaced the path: then None, and it is bound afresh)."""
        fd = self.take(name)
        if fd is None:
            return None
        try:
            sock = _socket.socket(fileno=fd)
        except OSError:
            return None
        try:
            if sock.type == kind and sock.getsockname() == path and os.path.exists(path):
                sock.setblocking(False)
                return sock
        except OSError:
            pass
        sock.close()
        return None

    def close_rest(self) -> None:
        """Close what nobody took (an option dropped since, a confused sender)."""
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()


def received() -> Handover | None:
    """The handover this ham was started with, if any (taken out of the environment)."""
    text = os.environ.pop(VARIABLE, None)
    return Handover.decode(text) if text else None


def inheritable(fds: dict[str, int]) -> None:
    """Let fds survive our own exec (`hamctl reexec`)."""
    for fd in fds.values():
        os.set_inheritable(fd, True)
