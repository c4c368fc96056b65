"""Signals with values: sigqueue(3) them, and receive them with the values (Python has no
sigqueue, and its sigwaitinfo drops si_value).

The receiver blocks the signals in the calling thread (threads started later inherit that)
and reads them from a signalfd(2): each read gives the signal, its si_code, the sender's
pid/uid and the value's int.
"""

import ctypes
import os
import signal
import struct

_libc = ctypes.CDLL(None, use_errno=True)
# struct signalfd_siginfo: 128 bytes; the fields we read come first (ssi_int at offset 44).
_SIGINFO = struct.Struct("=IiiIIiIIIIii")
_SFD_CLOEXEC = 0o2000000


class _Sigval(ctypes.Union):
    _fields_ = [("sival_int", ctypes.c_int), ("sival_ptr", ctypes.c_void_p)]


def sigqueue(pid: int, signum: int, value: int) -> bool:
    """Queue signum with an int value to pid; False when it cannot be sent."""
    return _libc.sigqueue(pid, signum, _Sigval(sival_int=value)) == 0


class _Sigset(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * 16)]


class Received:
    __slots__ = ("signo", "code", "pid", "uid", "value")

    def __init__(self, signo, code, pid, uid, value):
        self.signo, self.code, self.pid, self.uid, self.value = signo, code, pid, uid, value


class SignalReceiver:
    def __init__(self, signums):
        self.signums = tuple(signums)
        signal.pthread_sigmask(signal.SIG_BLOCK, self.signums)
        mask = _Sigset()
        _libc.sigemptyset(ctypes.byref(mask))
        for signum in self.signums:
            _libc.sigaddset(ctypes.byref(mask), signum)
        self.fd = _libc.signalfd(-1, ctypes.byref(mask), _SFD_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def fileno(self) -> int:
        return self.fd

    def read(self) -> Received:
        data = os.read(self.fd, 128)
        fields = _SIGINFO.unpack_from(data)
        return Received(signo=fields[0], code=fields[2], pid=fields[3], uid=fields[4], value=fields[11])

    def close(self) -> None:
        os.close(self.fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signums)
