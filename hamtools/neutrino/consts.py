"""QNX Neutrino constants with their QNX names and values (sys/neutrino.h)."""

import errno
import os

EOK = 0
ND_LOCAL_NODE = 0

# struct _pulse type/subtype of every pulse
_PULSE_TYPE = 0
_PULSE_SUBTYPE = 0

# Kernel pulse codes; the comment says what the pulse's value carries.
_PULSE_CODE_UNBLOCK = -32  # value: rcvid of the client that wants out
_PULSE_CODE_DISCONNECT = -33  # scoid (and value): the server connection that went away
_PULSE_CODE_THREADDEATH = -34  # value: thread id
_PULSE_CODE_COIDDEATH = -35  # value: coid whose server died
_PULSE_CODE_MINAVAIL = 0  # user pulse codes
_PULSE_CODE_MAXAVAIL = 127

# Channel flags
_NTO_CHF_FIXED_PRIORITY = 0x0001
_NTO_CHF_UNBLOCK = 0x0002
_NTO_CHF_THREAD_DEATH = 0x0004
_NTO_CHF_DISCONNECT = 0x0008
_NTO_CHF_NET_MSG = 0x0010
_NTO_CHF_SENDER_LEN = 0x0020
_NTO_CHF_COID_DISCONNECT = 0x0040
_NTO_CHF_REPLY_LEN = 0x0080

# Connect flags
_NTO_COF_CLOEXEC = 0x0001
_NTO_COF_DEAD = 0x0002

# Only these have an emulation; the others are accepted and have no effect on Linux.
SUPPORTED_CHANNEL_FLAGS = (
    _NTO_CHF_FIXED_PRIORITY | _NTO_CHF_UNBLOCK | _NTO_CHF_THREAD_DEATH | _NTO_CHF_DISCONNECT
    | _NTO_CHF_NET_MSG | _NTO_CHF_SENDER_LEN | _NTO_CHF_COID_DISCONNECT | _NTO_CHF_REPLY_LEN
)

# Errors a QNX program checks for, re-exported for ports.
EINTR = errno.EINTR
ESRCH = errno.ESRCH
EBUSY = errno.EBUSY
EINVAL = errno.EINVAL
EBADF = errno.EBADF
ETIMEDOUT = errno.ETIMEDOUT
EMSGSIZE = errno.EMSGSIZE
EBADMSG = errno.EBADMSG

# QNX's wording where it differs from glibc's, so ported programs print what QNX prints.
_QNX_STRERROR = {
    errno.EBUSY: "Resource busy",
    errno.EINTR: "Interrupted function call",
    errno.ESRCH: "No such process",
}


def strerror(err: int) -> str:
    return _QNX_STRERROR.get(err) or os.strerror(err)


# `from consts import *` must carry the underscore names too: they are the QNX API.
__all__ = [n for n in dir() if n.isupper() or n.startswith(("_PULSE_", "_NTO_"))] + ["strerror"]
