"""The heart of libha (`<ha/cover.h>`): which connections are HA-aware, and the recovery loop
every cover runs an operation through.

An HA-aware connection is an fd number (a file, a socket, or a hamtools.neutrino coid, which
is a socket's fd) with a recovery record: the recovery function, its handle, the counts of
ha_connection_ctrl and the enabled bit. ha_dup'ed fds share one record (QNX's reference
count): a change made through one is seen through the others, and the record lives until the
last of them is detached or closed.
"""

import errno
import os
import threading
from dataclasses import dataclass, field

# <ha/types.h>
HAREPLACERECOVERYFN = 0x0001

# ha_connection_ctrl() commands, <ha/types.h>
HA_RECOVERY_ACOUNT = 1  # args: the most recoveries over the connection's life (< 0: no limit)
HA_RECOVERY_ICOUNT = 2  # args: the most recoveries for one failure (< 0: no limit)
HA_RECOVERY_SUSPEND = 3
HA_RECOVERY_ENABLE = 4
HA_RECOVERY_RESET_ICOUNT = 5
HA_RECOVERY_RESET_ACOUNT = 6

# What a dead or restarted server looks like through a connection. QNX's covers recover on
# EBADF/ESRCH (a stale coid); on Linux the same event shows as ESTALE (NFS), ENOTCONN (a FUSE
# server gone, an unconnected socket), EPIPE/ECONNRESET/ECONNABORTED (a socket's peer gone)
# or ECONNREFUSED (nobody listening any more).
RECOVERABLE = frozenset({errno.EBADF, errno.ESRCH, errno.ESTALE, errno.ENOTCONN, errno.EPIPE,
                         errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED})


def _error(err: int, detail: str) -> OSError:
    return OSError(err, f"{os.strerror(err)}: {detail}")


@dataclass(eq=False)
class _Record:
    rfn: object
    rhdl: object
    fds: set = field(default_factory=set)  # the fd numbers sharing this record (ha_dup)
    acount_max: int = -1
    icount_max: int = -1
    acount: int = 0  # recoveries so far
    icount: int = 0  # recoveries for the current failure
    enabled: bool = True
    generation: int = 0  # bumped by each successful recovery: a racing thread just retransmits
    recovering: bool = False  # the recovery function is running: its own failures are its own
    lock: threading.RLock = field(default_factory=threading.RLock)


class Eof(OSError):
    """An operation's result that means the peer went away without an error (a stream's EOF):
    recovered like ECONNRESET; when recovery gives up, `result` is what the caller gets."""

    def __init__(self, result):
        super().__init__(errno.ECONNRESET, "the peer closed the connection")
        self.result = result


_records: dict[int, _Record] = {}
_table_lock = threading.Lock()


def _check_open(coid) -> None:
    if not isinstance(coid, int) or isinstance(coid, bool) or coid < 0:
        raise _error(errno.EBADF, f"{coid!r} is not a connection")
    try:
        os.fstat(coid)
    except OSError:
        raise _error(errno.EBADF, f"no connection {coid}") from None


def record(coid: int) -> _Record:
    """The recovery record of an HA-aware coid; EBADF if it is not one."""
    with _table_lock:
        found = _records.get(coid)
    if found is None:
        raise _error(errno.EBADF, f"connection {coid!r} is not HA-aware")
    return found


def ha_attach(coid: int, rfn, rhdl, flags: int) -> int:
    """QNX ha_attach(): make coid HA-aware; rfn(coid, rhdl) is called when an operation through
    a cover fails as a dead server makes it fail, and must return coid (then the operation is
    retransmitted) or -1 to give up. rfn None: HA-aware, but failures propagate.
    HAREPLACERECOVERYFN replaces the function of a connection that already has one (EBADF if
    it has none); without it, an HA-aware coid gives EEXIST. Returns 0."""
    if not isinstance(flags, int) or flags & ~HAREPLACERECOVERYFN:
        raise _error(errno.EINVAL, f"flags {flags!r}: only HAREPLACERECOVERYFN is defined")
    if rfn is not None and not callable(rfn):
        raise _error(errno.EINVAL, f"recovery function {rfn!r} is not callable")
    _check_open(coid)
    with _table_lock:
        found = _records.get(coid)
        if flags & HAREPLACERECOVERYFN:
            if found is None:
                raise _error(errno.EBADF, f"connection {coid} has no recovery function to replace")
            with found.lock:
                found.rfn, found.rhdl = rfn, rhdl
            return 0
        if found is not None:
            raise _error(errno.EEXIST, f"connection {coid} is already HA-aware")
        _records[coid] = _Record(rfn, rhdl, {coid})
    return 0


def ha_detach(coid: int) -> int:
    """QNX ha_detach(): coid is no longer HA-aware (its ha_dup'ed copies still are). EBADF if it
    was not attached. Returns 0."""
    with _table_lock:
        found = _records.pop(coid, None) if isinstance(coid, int) else None
    if found is None:
        raise _error(errno.EBADF, f"connection {coid!r} is not HA-aware")
    with found.lock:
        found.fds.discard(coid)
    return 0


def share(coid: int, newfd: int) -> None:
    """newfd (a dup of coid) joins coid's record: ha_dup's shared recovery."""
    with _table_lock:
        found = _records[coid]
        _records[newfd] = found
    with found.lock:
        found.fds.add(newfd)


def _count(args) -> int:
    if not isinstance(args, int) or isinstance(args, bool):
        raise _error(errno.EINVAL, f"args {args!r}: the count must be an int")
    return args


def ha_connection_ctrl(coid: int, command: int, args=None) -> int:
    """QNX ha_connection_ctrl(): HA_RECOVERY_ACOUNT / _ICOUNT set the limits (args: an int,
    negative = no limit, the default), HA_RECOVERY_SUSPEND / _ENABLE switch recovery off and on,
    HA_RECOVERY_RESET_ICOUNT / _ACOUNT zero the counters. EBADF: coid is not HA-aware;
    EINVAL: unknown command or a count that is not an int. Returns 0."""
    found = record(coid)
    with found.lock:
        if command == HA_RECOVERY_ACOUNT:
            found.acount_max = _count(args)
        elif command == HA_RECOVERY_ICOUNT:
            found.icount_max = _count(args)
        elif command == HA_RECOVERY_SUSPEND:
            found.enabled = False
        elif command == HA_RECOVERY_ENABLE:
            found.enabled = True
        elif command == HA_RECOVERY_RESET_ICOUNT:
            found.icount = 0
        elif command == HA_RECOVERY_RESET_ACOUNT:
            found.acount = 0
        else:
            raise _error(errno.EINVAL, f"unknown ha_connection_ctrl command {command!r}")
    return 0


def recovery_counts(coid: int) -> tuple[int, int]:
    """(recoveries so far, recoveries in the current failure) of an HA-aware coid: what QNX keeps
    inside and HA_RECOVERY_RESET_* zero (an extension, for tests and monitoring)."""
    found = record(coid)
    with found.lock:
        return found.acount, found.icount


def run(coid: int, operation):
    """Run operation() (an I/O on coid); while it fails as a dead server makes it fail and the
    counts allow, call the recovery function and retransmit. What the caller finally gets is
    the operation's result, or its original error (an Eof's result)."""
    with _table_lock:
        found = _records.get(coid)
    if found is None:
        return _plain(operation)
    recovered = False
    while True:
        generation = found.generation
        try:
            result = operation()
        except OSError as failure:
            if failure.errno not in RECOVERABLE:
                raise
            if not _recover(coid, found, generation, failure):
                if isinstance(failure, Eof):
                    return failure.result
                raise
            recovered = True
            continue
        if recovered:
            with found.lock:
                found.icount = 0  # "reset each time the connection is successfully recovered"
        return result


def _plain(operation):
    try:
        return operation()
    except Eof as eof:
        return eof.result


def _recover(coid: int, found: _Record, generation: int, failure: OSError) -> bool:
    """One recovery for failure; False when the connection is to fail instead."""
    with found.lock:
        if found.generation != generation:
            return True  # another thread recovered it while this one's operation failed
        if (found.recovering or not found.enabled or found.rfn is None or coid not in found.fds
                or 0 <= found.icount_max <= found.icount or 0 <= found.acount_max <= found.acount):
            return False
        found.icount += 1
        found.acount += 1
        found.recovering = True
        try:
            got = found.rfn(coid, found.rhdl)
        except OSError as err:
            failure.__context__ = err  # why the recovery failed, shown with the original error
            return False
        finally:
            found.recovering = False
        if got != coid:
            return False
        found.generation += 1
        for other in found.fds - {coid}:  # ha_dup'ed copies see the recovered connection too
            os.dup2(coid, other, inheritable=os.get_inheritable(other))
        return True
