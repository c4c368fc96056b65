"""libha for Python: QNX's client recovery library (`<ha/cover.h>` and friends), QNX's names.

    from hamtools.ha import *

    def recover_conn(oldfd, hdl):                 # QNX's RFp: int (*)(int coid, void *rhdl)
        newfd = ha_reopen(oldfd, TESTFILE, os.O_RDONLY)
        os.lseek(newfd, hdl.curr_offset, os.SEEK_SET)
        return newfd                              # the same number: the read is sent again

    fd = ha_open(TESTFILE, os.O_RDONLY, recover_conn, hdl, 0)
    data = read(fd, 15)                           # the cover: recovers when the server died

| QNX | here |
|---|---|
| ha_attach, ha_detach, ha_connection_ctrl (HA_RECOVERY_*) | the same, on any fd or coid |
| ha_open(64), ha_creat(64), ha_reopen, ha_close, ha_dup | the same, on os-level fds |
| ha_fopen, ha_fclose | a Python file object (binary with "b", else text) |
| ha_ConnectAttach(_r), ha_ReConnectAttach, ha_ConnectDetach(_r) | on hamtools.neutrino coids |
| libha.a's MsgSend, MsgSendPulse | `MsgSend`, `MsgSendPulse` here (import them from here) |
| read(), write(), lseek(), fstat() through the MsgSend cover | `read`, `write`, `lseek`, `fstat` here |
| (none) | `ha_socket`/`HaSocket`, `ha_reconnect`: a recovering socket |

Failures raise OSError with QNX's errno where C returns -1 (ha_attach: EBADF, EEXIST, EINVAL;
ha_detach: EBADF; ha_connection_ctrl: EBADF, EINVAL; the others: their underlying call's).

Differences, by necessity or by choice:
- Python cannot interpose on os.read & co., so recovery happens in the covers above only:
  do an HA-aware fd's I/O through them (or ha_fopen's file), never through os directly.
- Recovery starts on EBADF/ESRCH as on QNX, and on Linux's faces of the same event: ESTALE,
  ENOTCONN, EPIPE, ECONNRESET, ECONNABORTED, ECONNREFUSED (cover.RECOVERABLE); for a socket,
  also on the end of a stream (a killed server's kernel closes its end cleanly).
- A recovery function that raises OSError gives up like one that returns -1; the original
  error is raised with the recovery's error as its __context__. Failures inside the recovery
  function itself are never recovered (no recursion).
- After a recovery through one of several ha_dup'ed fds, the others are dup2'ed onto the
  recovered file, so every copy names the same recovered connection (QNX fixes up dups too).
- ha_close/ha_fclose/ha_ConnectDetach of a connection that is not HA-aware give EBADF and
  close nothing; ha_attach rejects unknown flag bits with EINVAL; rfn may be None (HA-aware,
  but failures propagate); ha_dup of a neutrino coid is EBADF (not a file descriptor).
- The ICOUNT counter goes back to 0 when an operation succeeds after recovering; the ACOUNT
  counter only with HA_RECOVERY_RESET_ACOUNT. `recovery_counts(coid)` shows both.
- Importing this module imports hamtools.neutrino (which wraps thread creation).
"""

from hamtools.ha.connections import (
    MsgSend,
    MsgSendPulse,
    ha_ConnectAttach,
    ha_ConnectAttach_r,
    ha_ConnectDetach,
    ha_ConnectDetach_r,
    ha_ReConnectAttach,
)
from hamtools.ha.cover import (
    HA_RECOVERY_ACOUNT,
    HA_RECOVERY_ENABLE,
    HA_RECOVERY_ICOUNT,
    HA_RECOVERY_RESET_ACOUNT,
    HA_RECOVERY_RESET_ICOUNT,
    HA_RECOVERY_SUSPEND,
    HAREPLACERECOVERYFN,
    RECOVERABLE,
    ha_attach,
    ha_connection_ctrl,
    ha_detach,
    recovery_counts,
)
from hamtools.ha.files import (
    fstat,
    ha_close,
    ha_creat,
    ha_creat64,
    ha_dup,
    ha_fclose,
    ha_fopen,
    ha_open,
    ha_open64,
    ha_reopen,
    lseek,
    read,
    write,
)
from hamtools.ha.sockets import HaSocket, ha_reconnect, ha_socket

__all__ = [
    "HAREPLACERECOVERYFN",
    "HA_RECOVERY_ACOUNT",
    "HA_RECOVERY_ENABLE",
    "HA_RECOVERY_ICOUNT",
    "HA_RECOVERY_RESET_ACOUNT",
    "HA_RECOVERY_RESET_ICOUNT",
    "HA_RECOVERY_SUSPEND",
    "RECOVERABLE",
    "HaSocket",
    "MsgSend",
    "MsgSendPulse",
    "fstat",
    "ha_ConnectAttach",
    "ha_ConnectAttach_r",
    "ha_ConnectDetach",
    "ha_ConnectDetach_r",
    "ha_ReConnectAttach",
    "ha_attach",
    "ha_close",
    "ha_connection_ctrl",
    "ha_creat",
    "ha_creat64",
    "ha_detach",
    "ha_dup",
    "ha_fclose",
    "ha_fopen",
    "ha_open",
    "ha_open64",
    "ha_reconnect",
    "ha_reopen",
    "ha_socket",
    "lseek",
    "read",
    "recovery_counts",
    "write",
]
