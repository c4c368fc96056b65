"""Stand-ins for the kernel side of a watchdog: a sysfs tree and a driver behind the ioctls.

The sysfs tree uses the kernel's exact formats (drivers/watchdog/watchdog_dev.c, reference
§2.1). The device node is /dev/null (char 1:3): /sys/dev/char/1:3 in the fake tree points at
the fake watchdog's directory, as /sys/dev/char/MAJ:MIN does on a real system.
"""

import errno
import os
import struct
from pathlib import Path

from hamtools.core import watchdog

DEVICE = "/dev/null"
DEVICE_NUMBER = "%d:%d" % (os.major(os.stat(DEVICE).st_rdev), os.minor(os.stat(DEVICE).st_rdev))

# softdog on a 6.1 kernel, as read in the VM: no options or fw_version attribute yet.
SOFTDOG_6_1 = {
    "identity": "Software Watchdog\n", "timeout": "60\n", "min_timeout": "1\n",
    "max_timeout": "65535\n", "pretimeout": "0\n", "pretimeout_governor": "noop\n",
    "pretimeout_available_governors": "panic\nnoop\n", "status": "0x8000\n",
    "bootstatus": "0\n", "nowayout": "0\n", "state": "inactive\n",
}
# The same on a kernel from 2023 on: sysfs alone answers everything wdctl shows.
SOFTDOG_NEW = {**SOFTDOG_6_1, "options": "0x8180\n", "fw_version": "0\n"}


def make_sysfs(root: Path, attributes: dict, name: str = "watchdog0",
               number: str | None = DEVICE_NUMBER) -> Path:
    """root/class/watchdog/NAME with these attribute files; root/dev/char/NUMBER links to it."""
    directory = root / "class" / "watchdog" / name
    directory.mkdir(parents=True)
    for attribute, text in attributes.items():
        (directory / attribute).write_text(text)
    if number:
        (root / "dev" / "char").mkdir(parents=True, exist_ok=True)
        (root / "dev" / "char" / number).symlink_to(directory)
    return directory


# The x86-64 request numbers, straight from the reference's table (not computed).
GETSUPPORT, GETSTATUS, GETBOOTSTATUS, GETTEMP = 0x80285700, 0x80045701, 0x80045702, 0x80045703
SETOPTIONS, KEEPALIVE, SETTIMEOUT, GETTIMEOUT = 0x80045704, 0x80045705, 0xC0045706, 0x80045707
SETPRETIMEOUT, GETPRETIMEOUT, GETTIMELEFT = 0xC0045708, 0x80045709, 0x8004570A


class FakeDriver:
    """The watchdog core and a driver, as far as ioctl goes; what was written lands in a file.

    Mirrors drivers/watchdog/watchdog_dev.c: SETTIMEOUT writes back what the driver took,
    SETPRETIMEOUT does not, KEEPALIVE needs WDIOF_KEEPALIVEPING, a missing feature is
    EOPNOTSUPP, an unknown request ENOTTY.
    """

    def __init__(self, tmp: Path, identity=b"Software Watchdog", options=0x8180, timeout=60,
                 timeleft=None, bootstatus=0, round_timeout_to=1, nowayout=False, busy=False):
        self.written = tmp / "device-writes"
        self.written.write_bytes(b"")
        self.identity, self.options, self.timeout = identity, options, timeout
        self.timeleft, self.bootstatus, self.round_to = timeleft, bootstatus, round_timeout_to
        self.nowayout, self.busy = nowayout, busy
        self.pretimeout, self.status, self.calls = 0, 0x8000, []

    def open(self, path: str) -> watchdog.Watchdog:
        if self.busy:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        fd = os.open(self.written, os.O_WRONLY | os.O_APPEND)
        return watchdog.Watchdog(fd, path, ioctl=self.ioctl)

    def ioctl(self, fd, request, buf, mutate):
        assert isinstance(buf, bytearray) and mutate, "arguments go through a pointer"
        self.calls.append(request)
        sizes = {GETSUPPORT: 40}
        assert len(buf) == sizes.get(request, 4), hex(request)
        value = struct.unpack("=i", buf)[0] if len(buf) == 4 else None
        answer = self._answer(request, value)
        if request == GETSUPPORT:
            buf[:] = struct.pack("=II32s", *answer)
        elif answer is not None:
            buf[:] = struct.pack("=i", answer)
        return 0

    def _answer(self, request, value):
        if request == GETSUPPORT:
            return self.options, 0, self.identity
        if request == GETSTATUS:
            return self.status
        if request == GETBOOTSTATUS:
            return self.bootstatus
        if request == GETTIMEOUT:
            return self.timeout
        if request == GETPRETIMEOUT:
            return self.pretimeout
        if request == SETTIMEOUT:
            if not self.options & watchdog.WDIOF_SETTIMEOUT:
                raise _err(errno.EOPNOTSUPP)
            if not 1 <= value <= 65535:
                raise _err(errno.EINVAL)
            self.timeout = -(-value // self.round_to) * self.round_to
            return self.timeout
        if request == SETPRETIMEOUT:
            if value and value >= self.timeout:
                raise _err(errno.EINVAL)
            self.pretimeout = value
            return None
        if request == GETTIMELEFT:
            if self.timeleft is None:
                raise _err(errno.EOPNOTSUPP)
            return self.timeleft
        if request == SETOPTIONS:
            if value & watchdog.WDIOS_DISABLECARD and self.nowayout:
                raise _err(errno.EBUSY)
            return None
        if request == KEEPALIVE:
            if not self.options & watchdog.WDIOF_KEEPALIVEPING:
                raise _err(errno.EOPNOTSUPP)
            return None
        raise _err(errno.ENOTTY)

    def writes(self) -> bytes:
        return self.written.read_bytes()


def _err(number: int) -> OSError:
    return OSError(number, os.strerror(number))
