"""libha's file covers (`<ha/fcntl.h>`, `<ha/unistd.h>`, `<ha/stdio.h>`): open an fd HA-aware,
reopen it under the same number, duplicate it with shared recovery, and the I/O covers.

QNX interposes on MsgSend, so a plain read() there is covered; Python's os.read cannot be,
so the covers are explicit: `ha.read`, `ha.write`, `ha.lseek`, `ha.fstat` are os's functions
that recover, and ha_fopen's file object does all its I/O through them.
"""

import errno
import io
import os
import sys

from hamtools.ha import cover
from hamtools.ha.cover import ha_attach, ha_detach


def _attached(fd: int, rfn, rhdl, haflags: int) -> int:
    try:
        ha_attach(fd, rfn, rhdl, haflags)
    except OSError:
        os.close(fd)
        raise
    return fd


def ha_open(path, oflag: int, rfn, rhdl, haflags: int, mode: int = 0o777) -> int:
    """QNX ha_open(): os.open(path, oflag, mode) then ha_attach(fd, rfn, rhdl, haflags)."""
    return _attached(os.open(path, oflag, mode), rfn, rhdl, haflags)


def ha_creat(path, mode: int, rfn, rhdl, haflags: int) -> int:
    """QNX ha_creat(): creat(path, mode) (O_WRONLY|O_CREAT|O_TRUNC) then ha_attach()."""
    return ha_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, rfn, rhdl, haflags, mode)


ha_open64 = ha_open  # Linux's Python has large files either way
ha_creat64 = ha_creat


def ha_reopen(oldfd: int, path, oflag: int, mode: int = 0o777) -> int:
    """QNX ha_reopen(), for recovery functions: open path again and put it under oldfd's number
    (dup2), closing the stale file. Returns oldfd; open()'s errors, and then oldfd is left as
    it was (so no other open can take its number meanwhile)."""
    try:
        inheritable = os.get_inheritable(oldfd)
    except OSError:
        inheritable = False  # closed already (EBADF): the number is free to take again
    newfd = os.open(path, oflag, mode)
    if newfd != oldfd:
        try:
            os.dup2(newfd, oldfd, inheritable=inheritable)
        finally:
            os.close(newfd)
    return oldfd


def ha_close(fd: int) -> int:
    """QNX ha_close(): ha_detach(fd) then os.close(fd). EBADF, and fd left open, if it was not
    HA-aware. Returns 0."""
    ha_detach(fd)
    os.close(fd)
    return 0


def ha_dup(oldfd: int) -> int:
    """QNX ha_dup(): os.dup(oldfd), the copy sharing oldfd's recovery (function, counts,
    enabled bit); after a recovery through either, both name the recovered file. EBADF if oldfd
    is not HA-aware, or is a hamtools.neutrino coid (not a file descriptor, as on QNX)."""
    cover.record(oldfd)
    if _is_coid(oldfd):
        raise cover._error(errno.EBADF, f"coid {oldfd} is a channel connection, not a file descriptor")
    newfd = os.dup(oldfd)
    cover.share(oldfd, newfd)
    return newfd


def _is_coid(fd: int) -> bool:
    neutrino = sys.modules.get("hamtools.neutrino.kernel")  # not imported: there are no coids
    return neutrino is not None and fd in neutrino.kernel.connections


# ---- the I/O covers ---------------------------------------------------------------------

def read(fd: int, n: int) -> bytes:
    """os.read, recovering an HA-aware fd (QNX: read() under libha's MsgSend cover)."""
    return cover.run(fd, lambda: os.read(fd, n))


def write(fd: int, data) -> int:
    """os.write, recovering an HA-aware fd."""
    return cover.run(fd, lambda: os.write(fd, data))


def lseek(fd: int, pos: int, how: int) -> int:
    """os.lseek, recovering an HA-aware fd (on QNX, lseek is a message to the server too)."""
    return cover.run(fd, lambda: os.lseek(fd, pos, how))


def fstat(fd: int) -> os.stat_result:
    """os.fstat, recovering an HA-aware fd."""
    return cover.run(fd, lambda: os.fstat(fd))


class _CoveredRaw(io.RawIOBase):
    """A raw file over an HA-aware fd whose every I/O goes through the covers."""

    def __init__(self, fd: int, readable: bool, writable: bool):
        super().__init__()
        self._fd, self._readable, self._writable = fd, readable, writable

    def fileno(self) -> int:
        return self._fd

    def readable(self) -> bool:
        return self._readable

    def writable(self) -> bool:
        return self._writable

    def seekable(self) -> bool:
        try:
            lseek(self._fd, 0, os.SEEK_CUR)
            return True
        except OSError:
            return False

    def readinto(self, buffer) -> int:
        data = read(self._fd, len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def write(self, data) -> int:
        return write(self._fd, data)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return lseek(self._fd, pos, whence)

    def tell(self) -> int:
        return lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            super().close()
            try:
                ha_detach(self._fd)
            except OSError:
                pass  # detached already (ha_fclose does it first)
            os.close(self._fd)


_MODES = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
          "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}


def ha_fopen(path, mode: str, rfn, rhdl, haflags: int):
    """QNX ha_fopen(): fopen(path, mode) then ha_attach(fileno, rfn, rhdl, haflags). mode is
    fopen's ("r", "w", "a", each with "+" and "b"/"t"); "b" gives a binary file, otherwise
    text. The recovery function gets the file's fd number. EINVAL for another mode."""
    kind = mode.replace("b", "").replace("t", "") if isinstance(mode, str) else None
    if kind not in ("r", "w", "a", "r+", "w+", "a+") or ("b" in mode and "t" in mode):
        raise cover._error(errno.EINVAL, f"fopen mode {mode!r}")
    oflag = _MODES[kind[0]]
    if "+" in kind:
        oflag = oflag & ~(os.O_WRONLY | os.O_RDONLY) | os.O_RDWR
    fd = ha_open(path, oflag, rfn, rhdl, haflags, 0o666)
    raw = _CoveredRaw(fd, readable=kind[0] == "r" or "+" in kind, writable=kind != "r")
    if "+" in kind:
        stream = io.BufferedRandom(raw)
    elif kind == "r":
        stream = io.BufferedReader(raw)
    else:
        stream = io.BufferedWriter(raw)
    return stream if "b" in mode else io.TextIOWrapper(stream)


def ha_fclose(fp) -> int:
    """QNX ha_fclose(): ha_detach(fileno(fp)) then fclose(fp). EBADF, and fp left open, if it is
    not HA-aware. Returns 0."""
    ha_detach(fp.fileno())
    fp.close()
    return 0
