"""libha's covers of hamtools.neutrino (`<ha/neutrino.h>`): ha_ConnectAttach and friends, and
the MsgSend/MsgSendPulse that recover, as libha.a's own MsgSend* do on QNX.

A coid whose server died fails with ESRCH; an HA-aware one calls its recovery function,
which typically finds the restarted server and ha_ReConnectAttach()es to it, and the message
is sent again (so a request the dead server had received but not answered is delivered twice:
the at-least-once semantics of QNX's libha).
"""

import errno

from hamtools import neutrino
from hamtools.ha import cover
from hamtools.neutrino.kernel import kernel


def ha_ConnectAttach(nd: int, pid: int, chid: int, index: int, flags: int, rfn, rhdl,
                     haflags: int) -> int:
    """QNX ha_ConnectAttach(): ConnectAttach() then ha_attach(coid, rfn, rhdl, haflags)."""
    coid = neutrino.ConnectAttach(nd, pid, chid, index, flags)
    try:
        cover.ha_attach(coid, rfn, rhdl, haflags)
    except OSError:
        neutrino.ConnectDetach(coid)
        raise
    return coid


def ha_ConnectAttach_r(nd: int, pid: int, chid: int, index: int, flags: int, rfn, rhdl,
                       haflags: int) -> int:
    """QNX ha_ConnectAttach_r(): the coid, or -errno instead of raising."""
    return _negated(lambda: ha_ConnectAttach(nd, pid, chid, index, flags, rfn, rhdl, haflags))


def ha_ReConnectAttach(oldcoid: int, nd: int, pid: int, chid: int, index: int, flags: int) -> int:
    """QNX ha_ReConnectAttach(), for recovery functions: connect to (pid, chid) again under
    oldcoid's number, closing the stale connection. Returns oldcoid; ConnectAttach()'s errors
    (ESRCH: no such channel yet), and then oldcoid is left as it was; EBADF if oldcoid is not
    a connection."""
    return kernel.reconnect_attach(oldcoid, nd, pid, chid)


def ha_ConnectDetach(coid: int) -> int:
    """QNX ha_ConnectDetach(): ha_detach(coid) then ConnectDetach(coid). EBADF, and coid left
    connected, if it was not HA-aware. Returns 0."""
    cover.ha_detach(coid)
    neutrino.ConnectDetach(coid)
    return 0


def ha_ConnectDetach_r(coid: int) -> int:
    """QNX ha_ConnectDetach_r(): EOK (0), or -errno instead of raising."""
    return _negated(lambda: ha_ConnectDetach(coid))


def _negated(call) -> int:
    try:
        return call()
    except OSError as err:
        return -(err.errno or errno.EINVAL)


def MsgSend(coid: int, msg: bytes) -> neutrino.SendResult:
    """hamtools.neutrino.MsgSend, recovering an HA-aware coid."""
    return cover.run(coid, lambda: neutrino.MsgSend(coid, msg))


def MsgSendPulse(coid: int, priority: int, code: int, value: int) -> None:
    """hamtools.neutrino.MsgSendPulse, recovering an HA-aware coid."""
    return cover.run(coid, lambda: neutrino.MsgSendPulse(coid, priority, code, value))
