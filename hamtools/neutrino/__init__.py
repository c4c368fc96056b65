"""QNX Neutrino message passing on Linux: channels, connections, messages and pulses.

QNX names and argument order, so QNX code ports line by line:

    chid = ChannelCreate(_NTO_CHF_UNBLOCK)
    rcvid, msg, info = MsgReceive(chid)        # rcvid 0: msg is a Pulse
    MsgReply(rcvid, 0, b"answer")  /  MsgError(rcvid, EINTR)

    coid = ConnectAttach(ND_LOCAL_NODE, pid, chid, _NTO_SIDE_CHANNEL, 0)
    status, reply = MsgSend(coid, b"question")  # blocks until MsgReply/MsgError
    MsgSendPulse(coid, -1, code, value)

Differences from QNX, by necessity:
- MsgSend returns (status, reply) instead of filling a buffer; failures raise OSError with
  QNX's errno (ESRCH: the server died; EINTR: MsgError(EINTR), ...).
- A signal whose Python handler raises (SIGINT's KeyboardInterrupt) while MsgSend waits does
  not end the wait: the server is told (_PULSE_CODE_UNBLOCK on an _NTO_CHF_UNBLOCK channel),
  and MsgSend re-raises that exception once the server has replied or MsgError'd (the error
  is chained as __context__). A handler that returns normally lets the wait go on unnoticed.
- Messages and replies are at most MAX_BODY (64 KiB) bytes (EMSGSIZE beyond).
- MsgSend on one coid from several threads is serialised.
- Importing this module wraps thread creation so THREADDEATH can report thread ids (gettid).
- Channels are abstract AF_UNIX sockets without permissions: check info.uid / pulse.uid.
"""

from hamtools.neutrino.consts import *  # noqa: F401,F403  (QNX's names, QNX's values)
from hamtools.neutrino.consts import ND_LOCAL_NODE
from hamtools.core.wire import MAX_BODY, Pulse, channel_address
from hamtools.neutrino.kernel import MsgInfo, Received, SendResult, gettid, kernel

_NTO_SIDE_CHANNEL = 0x40000000


def ChannelCreate(flags: int = 0) -> int:
    """A new channel of this process; its chid. EBUSY for a second THREAD_DEATH or
    COID_DISCONNECT channel."""
    return kernel.channel_create(flags)


def ChannelDestroy(chid: int) -> None:
    kernel.channel_destroy(chid)


def ConnectAttach(nd: int, pid: int, chid: int, index: int = 0, flags: int = 0) -> int:
    """Connect to channel chid of process pid (0: this process); returns the coid."""
    return kernel.connect_attach(nd, pid, chid)


def ConnectDetach(coid: int) -> None:
    """Close a connection (or release a scoid reported by a DISCONNECT pulse)."""
    kernel.connect_detach(coid)


def MsgSend(coid: int, msg: bytes) -> SendResult:
    """Send msg and block until the server replies: returns (status, reply bytes)."""
    return kernel.msg_send(coid, msg)


def MsgSendPulse(coid: int, priority: int, code: int, value: int) -> None:
    """Send a pulse (never blocks). priority is accepted for QNX compatibility."""
    kernel.msg_send_pulse(coid, priority, code, value)


def MsgReceive(chid: int, timeout: float | None = None) -> Received:
    """Wait for a message or pulse: (rcvid, msg, info); rcvid 0 means msg is a Pulse.
    timeout (seconds) raises OSError(ETIMEDOUT), like QNX's TimerTimeout."""
    return kernel.msg_receive(chid, timeout, pulses_only=False)


def MsgReceivePulse(chid: int, timeout: float | None = None) -> Pulse:
    """Wait for a pulse only (messages stay queued for MsgReceive)."""
    return kernel.msg_receive(chid, timeout, pulses_only=True).msg


def MsgReply(rcvid: int, status: int = 0, msg: bytes = b"") -> None:
    """Unblock the sender of rcvid; its MsgSend returns (status, msg). ESRCH if it is gone."""
    kernel.msg_reply(rcvid, status, msg)


def MsgError(rcvid: int, error: int) -> None:
    """Unblock the sender of rcvid with an error: its MsgSend raises OSError(error).
    error EOK makes MsgSend return (0, b"")."""
    kernel.msg_error(rcvid, error)


__all__ = [name for name in dir() if not name.startswith("__") and name not in ("kernel", "consts")]
