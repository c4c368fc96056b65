"""Stand-ins for the kernel side of a watchdog: a sysfs tree and a driver behind the ioctls.

The sysfs tree uses the kernel's exact formats (drivers/watchdog/watchdog_dev.c, reference
§2.1). The device node is /dev/null (char 1:3): /sys/dev/char/1:3 in the fake tree points at
the fake watchdog's directory, as /sys/dev/char/MAJ:MIN does on a real system.

    python -m tests.wdt_fakes WRITES [ARGS...]

runs `hamtools ARGS...` with every watchdog open going to a FakeDriver whose writes land in
the file WRITES: for the tests that need a process of its own (feed's signals, its daemon).
"""

import errno
import os
import struct
import sys
from pathlib import Path

from hamtools.core import ioc, watchdog

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


# The request numbers for this machine's ioctl layout, from the kernel header's own macros
# (_IOR/_IOWR, 40-byte struct watchdog_info, int arguments) written out again here with the
# ioc module, not taken from watchdog.WDIOC: so a wrong number in watchdog.py shows up.
_INFO_SIZE, _INT_SIZE = 40, 4
GETSUPPORT = ioc.ior("W", 0, _INFO_SIZE)
GETSTATUS, GETBOOTSTATUS, GETTEMP = (ioc.ior("W", nr, _INT_SIZE) for nr in (1, 2, 3))
SETOPTIONS, KEEPALIVE = ioc.ior("W", 4, _INT_SIZE), ioc.ior("W", 5, _INT_SIZE)  # sic: _IOR
SETTIMEOUT, GETTIMEOUT = ioc.iowr("W", 6, _INT_SIZE), ioc.ior("W", 7, _INT_SIZE)
SETPRETIMEOUT, GETPRETIMEOUT = ioc.iowr("W", 8, _INT_SIZE), ioc.ior("W", 9, _INT_SIZE)
GETTIMELEFT = ioc.ior("W", 10, _INT_SIZE)
REQUEST_NAMES = {GETSUPPORT: "GETSUPPORT", GETSTATUS: "GETSTATUS",
                 GETBOOTSTATUS: "GETBOOTSTATUS", GETTEMP: "GETTEMP", SETOPTIONS: "SETOPTIONS",
                 KEEPALIVE: "KEEPALIVE", SETTIMEOUT: "SETTIMEOUT", GETTIMEOUT: "GETTIMEOUT",
                 SETPRETIMEOUT: "SETPRETIMEOUT", GETPRETIMEOUT: "GETPRETIMEOUT",
                 GETTIMELEFT: "GETTIMELEFT"}


class FakeDriver:
    """The watchdog core and a driver, as far as ioctl goes; what was written lands in a file.

    Mirrors drivers/watchdog/watchdog_dev.c: SETTIMEOUT writes back what the driver took,
    SETPRETIMEOUT does not, KEEPALIVE needs WDIOF_KEEPALIVEPING, a missing feature is
    EOPNOTSUPP, an unknown request ENOTTY. failing={"SETOPTIONS": errno.ENOTTY} makes a
    request fail as a driver without it does. `calls` are the request names, in order.
    """

    def __init__(self, tmp: Path, identity=b"Software Watchdog", options=0x8180, timeout=60,
                 timeleft=None, bootstatus=0, round_timeout_to=1, nowayout=False, busy=False,
                 failing=None, writes_to: Path | None = None):
        self.written = writes_to or tmp / "device-writes"
        self.written.write_bytes(b"")
        self.identity, self.options, self.timeout = identity, options, timeout
        self.timeleft, self.bootstatus, self.round_to = timeleft, bootstatus, round_timeout_to
        self.nowayout, self.busy, self.failing = nowayout, busy, dict(failing or {})
        self.pretimeout, self.status, self.calls = 0, 0x8000, []

    def open(self, path: str) -> watchdog.Watchdog:
        if self.busy:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        fd = os.open(self.written, os.O_WRONLY | os.O_APPEND)
        return watchdog.Watchdog(fd, path, ioctl=self.ioctl)

    def ioctl(self, fd, request, buf, mutate):
        assert isinstance(buf, bytearray) and mutate, "arguments go through a pointer"
        name = REQUEST_NAMES.get(request, hex(request))
        self.calls.append(name)
        sizes = {GETSUPPORT: _INFO_SIZE}
        assert len(buf) == sizes.get(request, _INT_SIZE), name
        value = struct.unpack("=i", buf)[0] if len(buf) == _INT_SIZE else None
        if name in self.failing:
            raise _err(self.failing[name])
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


def install(driver: FakeDriver) -> None:
    """Every Watchdog.open from now on opens the fake driver instead."""
    watchdog.Watchdog.open = classmethod(lambda cls, path: driver.open(path))


if __name__ == "__main__":
    from hamtools import multicall

    writes = Path(sys.argv[1])
    install(FakeDriver(writes.parent, writes_to=writes))
    sys.exit(multicall.main(["hamtools", *sys.argv[2:]]))
