"""The Linux watchdog device API (include/uapi/linux/watchdog.h): names, struct, every WDIOC_* call.

Device access only, no CLI: `wdt` and ham's hardware-watchdog feeding both sit on top of it.
Opening a watchdog starts it; see Watchdog for what closing does.
"""

import errno
import fcntl
import os
import stat
import struct

from hamtools.core import ioc
from hamtools.core.errors import describe_oserror

# WDIOF_*: bits of watchdog_info.options (what the driver supports), and of the status and
# boot status words (what is happening / why the last reset happened).
WDIOF_OVERHEAT = 0x0001
WDIOF_FANFAULT = 0x0002
WDIOF_EXTERN1 = 0x0004
WDIOF_EXTERN2 = 0x0008
WDIOF_POWERUNDER = 0x0010
WDIOF_CARDRESET = 0x0020
WDIOF_POWEROVER = 0x0040
WDIOF_SETTIMEOUT = 0x0080
WDIOF_MAGICCLOSE = 0x0100
WDIOF_PRETIMEOUT = 0x0200
WDIOF_ALARMONLY = 0x0400
WDIOF_KEEPALIVEPING = 0x8000

# WDIOS_*: the WDIOC_SETOPTIONS argument.
WDIOS_DISABLECARD = 0x0001
WDIOS_ENABLECARD = 0x0002
WDIOS_TEMPPANIC = 0x0004

# (name, bit, description) in util-linux wdctl's row order and wording.
FLAGS = (
    ("CARDRESET", WDIOF_CARDRESET, "Card previously reset the CPU"),
    ("EXTERN1", WDIOF_EXTERN1, "External relay 1"),
    ("EXTERN2", WDIOF_EXTERN2, "External relay 2"),
    ("FANFAULT", WDIOF_FANFAULT, "Fan failed"),
    ("KEEPALIVEPING", WDIOF_KEEPALIVEPING, "Keep alive ping reply"),
    ("MAGICCLOSE", WDIOF_MAGICCLOSE, "Supports magic close char"),
    ("OVERHEAT", WDIOF_OVERHEAT, "Reset due to CPU overheat"),
    ("POWEROVER", WDIOF_POWEROVER, "Power over voltage"),
    ("POWERUNDER", WDIOF_POWERUNDER, "Power bad/power fault"),
    ("PRETIMEOUT", WDIOF_PRETIMEOUT, "Pretimeout (in seconds)"),
    ("SETTIMEOUT", WDIOF_SETTIMEOUT, "Set timeout (in seconds)"),
    ("ALARMONLY", WDIOF_ALARMONLY, "Not trigger reboot"),
)
SETOPTIONS = (("DISABLECARD", WDIOS_DISABLECARD), ("ENABLECARD", WDIOS_ENABLECARD),
              ("TEMPPANIC", WDIOS_TEMPPANIC))

# The longest timeout (and pretimeout) the watchdog core accepts, in seconds: it keeps
# milliseconds in an unsigned int (watchdog_timeout_invalid: t > UINT_MAX / 1000).
MAX_TIMEOUT = 0xFFFFFFFF // 1000

# Boot status bits that say the watchdog card reset the machine (the same set the kernel's
# watchdog core reports as status when a driver has no status op).
RESET_CAUSES = (WDIOF_CARDRESET | WDIOF_OVERHEAT | WDIOF_FANFAULT | WDIOF_EXTERN1 | WDIOF_EXTERN2
                | WDIOF_POWERUNDER | WDIOF_POWEROVER)


def flag_names(bits: int) -> list[str]:
    """WDIOF names of the bits set, in wdctl's order; unknown bits as one hex number."""
    names = [name for name, bit, _ in FLAGS if bits & bit]
    unknown = bits & ~sum(bit for _, bit, _ in FLAGS)
    if unknown:
        names.append(f"0x{unknown:x}")
    return names


# struct watchdog_info { __u32 options; __u32 firmware_version; __u8 identity[32]; } in the
# machine's own byte order: big-endian MIPS/PowerPC boards exist.
WATCHDOG_INFO = struct.Struct("=II32s")
_INT = struct.Struct("=i")


class WatchdogInfo:
    __slots__ = ("options", "firmware_version", "identity")

    def __init__(self, options: int, firmware_version: int, identity: str):
        self.options, self.firmware_version, self.identity = options, firmware_version, identity

    @classmethod
    def unpack(cls, raw: bytes) -> "WatchdogInfo":
        options, version, identity = WATCHDOG_INFO.unpack(raw)
        # A driver may fill all 32 bytes: stop at the first NUL, if any.
        return cls(options, version, identity.split(b"\0", 1)[0].decode("utf-8", "replace"))


class Requests:
    """The eleven WDIOC_* request numbers for one ioctl layout."""

    __slots__ = ("GETSUPPORT", "GETSTATUS", "GETBOOTSTATUS", "GETTEMP", "SETOPTIONS",
                 "KEEPALIVE", "SETTIMEOUT", "GETTIMEOUT", "SETPRETIMEOUT", "GETPRETIMEOUT",
                 "GETTIMELEFT")

    def __init__(self, layout: ioc.Layout):
        int_size = _INT.size
        self.GETSUPPORT = ioc.ior("W", 0, WATCHDOG_INFO.size, layout)
        self.GETSTATUS = ioc.ior("W", 1, int_size, layout)
        self.GETBOOTSTATUS = ioc.ior("W", 2, int_size, layout)
        self.GETTEMP = ioc.ior("W", 3, int_size, layout)
        # SETOPTIONS and KEEPALIVE are _IOR in the kernel header although they pass input.
        self.SETOPTIONS = ioc.ior("W", 4, int_size, layout)
        self.KEEPALIVE = ioc.ior("W", 5, int_size, layout)
        self.SETTIMEOUT = ioc.iowr("W", 6, int_size, layout)
        self.GETTIMEOUT = ioc.ior("W", 7, int_size, layout)
        self.SETPRETIMEOUT = ioc.iowr("W", 8, int_size, layout)
        self.GETPRETIMEOUT = ioc.ior("W", 9, int_size, layout)
        self.GETTIMELEFT = ioc.ior("W", 10, int_size, layout)


WDIOC = Requests(ioc.NATIVE)


class NotAWatchdog(OSError):
    """The path is not a watchdog device. Nothing was written to it (it may not even have
    been opened): a disk or a file must never get the magic 'V' or a ping byte."""

    def __init__(self, path: str, why: str):
        super().__init__(errno.ENOTTY, why, path)


_FILE_TYPES = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
               (stat.S_ISSOCK, "a socket"))


def _refuse_non_character(path: str, mode: int) -> None:
    """Every watchdog node is a character device: anything else is refused unwritten."""
    if not stat.S_ISCHR(mode):
        kind = next((name for test, name in _FILE_TYPES if test(mode)), "not a character device")
        raise NotAWatchdog(path, kind)


class Watchdog:
    """An open watchdog device (opening it started it), proven to be one.

    Every instance has answered WDIOC_GETSUPPORT (its answer is `info`) before anything is
    written to it: the constructor asks, and on failure closes the descriptor untouched and
    raises NotAWatchdog. So ping() and magic_close() only ever write to a watchdog.

    close() leaves a driver with magic close running (the kernel logs "watchdog did not
    stop!") and stops one without it; magic_close() writes 'V' first, which stops it unless
    nowayout is set. Errors are OSError with the kernel's errno (see describe_error).
    """

    def __init__(self, fd: int, path: str, ioctl=fcntl.ioctl):
        self.fd, self.path, self._ioctl = fd, path, ioctl
        try:
            self.info = self.get_support()
        except OSError as err:
            self.close()  # without a byte written: it is no (working) watchdog
            if is_unsupported(err) or err.errno == errno.EINVAL:
                raise NotAWatchdog(path, "it does not answer WDIOC_GETSUPPORT") from None
            raise

    @classmethod
    def open(cls, path: str) -> "Watchdog":
        """Open and prove a watchdog node. OSError from stat/open; NotAWatchdog if it is none.

        The type is checked before the open (a disk is never opened for writing, a FIFO
        would block the open) and again on the descriptor, in case the path was swapped in
        between; O_NOCTTY keeps a tty from becoming our controlling terminal.
        """
        _refuse_non_character(path, os.stat(path).st_mode)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            _refuse_non_character(path, os.fstat(fd).st_mode)
        except NotAWatchdog:
            os.close(fd)
            raise
        return cls(fd, path)

    def _get_int(self, request: int) -> int:
        # Every int argument goes through a pointer (get_user/put_user), never by value.
        buf = bytearray(_INT.size)
        self._ioctl(self.fd, request, buf, True)
        return _INT.unpack(buf)[0]

    def _set_int(self, request: int, value: int) -> int:
        buf = bytearray(_INT.pack(value))
        self._ioctl(self.fd, request, buf, True)
        return _INT.unpack(buf)[0]

    def get_support(self) -> WatchdogInfo:
        buf = bytearray(WATCHDOG_INFO.size)
        self._ioctl(self.fd, WDIOC.GETSUPPORT, buf, True)
        return WatchdogInfo.unpack(bytes(buf))

    def get_status(self) -> int:
        """WDIOF bits now; reading clears KEEPALIVEPING (it means "pinged since last read")."""
        return self._get_int(WDIOC.GETSTATUS)

    def get_bootstatus(self) -> int:
        return self._get_int(WDIOC.GETBOOTSTATUS)

    def get_temp(self) -> int:
        """Degrees Fahrenheit; few drivers have it (ENOTTY otherwise)."""
        return self._get_int(WDIOC.GETTEMP)

    def set_options(self, options: int) -> None:
        self._set_int(WDIOC.SETOPTIONS, options)

    def keepalive(self) -> None:
        self._set_int(WDIOC.KEEPALIVE, 0)

    def set_timeout(self, seconds: int) -> int:
        """Set the timeout (this also pings); returns the timeout the driver really took."""
        return self._set_int(WDIOC.SETTIMEOUT, seconds)

    def get_timeout(self) -> int:
        return self._get_int(WDIOC.GETTIMEOUT)

    def set_pretimeout(self, seconds: int) -> None:
        """Seconds before the timeout; 0 disables. The kernel does not write the value back."""
        self._set_int(WDIOC.SETPRETIMEOUT, seconds)

    def get_pretimeout(self) -> int:
        return self._get_int(WDIOC.GETPRETIMEOUT)

    def get_timeleft(self) -> int:
        return self._get_int(WDIOC.GETTIMELEFT)

    def ping(self) -> None:
        """Feed it by writing one NUL byte, as busybox does; any write pings, KEEPALIVE or not."""
        os.write(self.fd, b"\0")

    def magic_close(self) -> None:
        """Write 'V' as the last byte, then close: the driver may stop (nowayout overrules it)."""
        try:
            os.write(self.fd, b"V")
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def session(path: str, body, *, disarm: bool):
    """Open the device, return body(device), close it: with the magic 'V' first if disarm.

    Every signal stays blocked from before the open to after the close, so no Ctrl-C or kill
    can come between them and leave the watchdog armed by accident. OSError from the open
    (NotAWatchdog included: then nothing was written) propagates; body's exceptions propagate
    after the close.
    """
    # Imported here: the signal module costs an enum import that sysfs-only paths never need.
    import signal

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        device = Watchdog.open(path)
        try:
            return body(device)
        finally:
            if disarm:
                device.magic_close()
            else:
                device.close()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def is_unsupported(err: OSError) -> bool:
    # ENOTTY: a request the core and the driver do not know; EOPNOTSUPP: one the driver lacks.
    return err.errno in (errno.ENOTTY, errno.EOPNOTSUPP)


def describe_error(err: OSError, identity: str | None = None) -> str:
    """The "why" of an error line, worded for the watchdog API (EBUSY as open(2) means it)."""
    if isinstance(err, NotAWatchdog):
        return f"not a watchdog device ({err.strerror})"
    if is_unsupported(err):
        return f"not supported by {identity}" if identity else "not supported by this driver"
    if err.errno == errno.EBUSY:
        return "device busy: another process holds it (a watchdog daemon, systemd, wdt feed)"
    if err.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (watchdogs are usually root's)"
    if err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return "no such device"
    return describe_oserror(err)
