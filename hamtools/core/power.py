"""Rebooting the machine: sync, then the reboot(2) system call (no init system involved).

This is the seed's last resort (sysmgr_reboot() on QNX): it works even when the service
manager is the thing that is broken. Only ever called when the user asked for it.
"""

import ctypes
import os

RB_AUTOBOOT = 0x01234567  # LINUX_REBOOT_CMD_RESTART


def reboot() -> None:
    """Flush the filesystems and restart now. Returns only by raising OSError (e.g. EPERM)."""
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.reboot(RB_AUTOBOOT) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
