"""A connection to ham: one SEQPACKET socket, request -> answer (hamtools.core.hamproto)."""

import errno
import os
import socket

from hamtools.core import runtime, wire
from hamtools.core import hamproto as protocol

MAX_ANSWER = 64 * 1024 * 1024  # ham caps its answers lower; this only bounds a confused peer


class Connection:
    """Talks to ham over its control socket when we may, else its client socket."""

    def __init__(self, prefer_control: bool = True, timeout: float | None = None):
        """timeout: seconds each connect, send and receive may take (None: no limit)."""
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # CLOEXEC by default
        self.sock.settimeout(timeout)
        self._next_id = 1
        paths = [runtime.control_socket(), runtime.client_socket()]
        if not prefer_control:
            paths.reverse()
        last: OSError | None = None
        for path in paths:
            try:
                self.sock.connect(path)
                self.path = path
                return
            except PermissionError as err:
                last = err
            except (FileNotFoundError, ConnectionRefusedError) as err:
                last = err
        self.sock.close()
        if isinstance(last, PermissionError):
            raise OSError(errno.EACCES, f"ham's sockets in {runtime.runtime_dir()}: permission denied")
        raise OSError(errno.EBADF, f"ham is not running (no socket in {runtime.runtime_dir()})")

    def request(self, op: str, args: dict | None = None):
        msg_id = self._next_id
        self._next_id = msg_id % 0x7FFFFFFF + 1
        answer = wire.LongReply(msg_id, MAX_ANSWER)
        try:
            self.sock.send(wire.encode(wire.SEND, msg_id, protocol.encode_request(op, args)))
            frame = None
            while frame is None:
                data = self.sock.recv(wire.MAX_FRAME)
                if not data:
                    raise OSError(errno.EBADF, "ham closed the connection")
                frame = wire.decode_datagram(data)
                frame = answer.feed(frame) if frame.msg_id == msg_id else None
        except (BrokenPipeError, ConnectionResetError):
            raise OSError(errno.EBADF, "ham went away") from None
        except wire.ProtocolError as bad:
            raise OSError(errno.EBADMSG, f"unreadable answer from ham: {bad}") from None
        status, body = wire.decode_status(frame)
        if frame.kind == wire.ERROR:
            raise OSError(status, os.strerror(status))
        return protocol.decode_answer(status, body)

    def pulse(self, code: int, value: int = 0) -> None:
        try:
            self.sock.send(wire.encode_pulse(wire.Pulse(code=code, value=value)),
                           socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            pass  # ham is busy: a heartbeat dropped here is as good as the next one
        except OSError:
            raise OSError(errno.EBADF, "ham went away") from None

    def close(self) -> None:
        self.sock.close()
