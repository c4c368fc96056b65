"""What util-linux wdctl shows about a watchdog, gathered without arming it.

sysfs first. The device is opened only when sysfs lacks something wanted and opening is safe:
only when nowayout is known to be off (with it set, opening would arm it for good; a sysfs
directory without a readable nowayout leaves that open, so it is not risked, as wdctl does),
and not while it is active (it is then held by someone, or was left running on purpose, and
our closing could stop it). Without any sysfs directory there is nothing to ask first, and
the device is opened. What it opens it always closes with the magic 'V' (watchdog.session).
"""

import os

from hamtools.core import watchdog
from hamtools.core import watchdog_sysfs as sysfs

DEFAULT_DEVICES = ("/dev/watchdog0", "/dev/watchdog")
# What the info view needs; sysfs before 2023 has no options or fw_version.
INFO_FIELDS = ("identity", "options", "firmware_version", "timeout")


def default_device() -> str | None:
    """/dev/watchdog0 (it has a sysfs directory), else the legacy /dev/watchdog."""
    for path in DEFAULT_DEVICES:
        if os.path.exists(path):
            return path
    return None


class Snapshot:
    """One watchdog's state. Fields are None when unknown."""

    __slots__ = ("device", "sysfs_dir", "identity", "firmware_version", "options", "status",
                 "bootstatus", "timeout", "pretimeout", "timeleft", "min_timeout", "max_timeout",
                 "nowayout", "state", "governor", "governors", "opened", "not_opened",
                 "unsupported")

    def __init__(self, device: str, sysfs_dir: str | None, attributes: dict):
        self.device, self.sysfs_dir = device, sysfs_dir
        get = attributes.get
        self.identity, self.firmware_version = get("identity"), get("fw_version")
        self.options, self.status, self.bootstatus = get("options"), get("status"), get("bootstatus")
        self.timeout, self.pretimeout, self.timeleft = get("timeout"), get("pretimeout"), get("timeleft")
        self.min_timeout, self.max_timeout = get("min_timeout"), get("max_timeout")
        self.nowayout, self.state = get("nowayout"), get("state")
        self.governor, self.governors = get("pretimeout_governor"), get("pretimeout_available_governors")
        self.opened = False
        self.not_opened: str | None = None  # why the device was not opened although wanted
        self.unsupported: set[str] = set()  # fields the driver said it cannot give

    def flag_bits(self) -> int | None:
        """The flag rows to show: supported options, plus any bit set now or at boot."""
        if self.options is None:
            return None
        return self.options | (self.status or 0) | (self.bootstatus or 0)

    def missing(self, fields) -> list[str]:
        return [name for name in fields
                if getattr(self, name) is None and name not in self.unsupported]


def unsafe_to_open(snapshot: Snapshot) -> str | None:
    """Why opening the device could change what it does, or None."""
    if snapshot.nowayout:
        return "nowayout is set, so opening it would arm it for good"
    if snapshot.sysfs_dir is not None and snapshot.nowayout is None:
        return "nowayout could not be read from sysfs, and if set, opening it would arm it for good"
    if snapshot.state == "active":
        return "it is active, and opening and closing it could stop it"
    return None


def probe(device: str, wanted=INFO_FIELDS, sys_root: str = "/sys") -> Snapshot:
    """The device's state from sysfs, completed from the device itself when that is safe.

    Raises OSError when the device node cannot be stat()ed, or when it had to be opened and
    could not be (EBUSY, EACCES...): then sysfs had too little to go on.
    """
    directory = sysfs.device_dir(device, sys_root)
    snapshot = Snapshot(device, directory, sysfs.read_attributes(directory) if directory else {})
    if directory is not None:
        # The kernel hides these attributes when the driver cannot give them.
        snapshot.unsupported.update(
            field for field in ("timeleft", "pretimeout") if getattr(snapshot, field) is None)
    if not snapshot.missing(wanted):
        return snapshot
    snapshot.not_opened = unsafe_to_open(snapshot)
    if snapshot.not_opened is None:
        try:
            watchdog.session(device, lambda opened: _query(opened, snapshot), disarm=True)
            snapshot.opened = True
        except OSError as err:
            if directory is None:
                raise  # nothing at all to show
            snapshot.not_opened = f"opening it failed: {watchdog.describe_error(err)}"
    return snapshot


def _query(device: watchdog.Watchdog, snapshot: Snapshot) -> None:
    info = device.info
    snapshot.identity, snapshot.firmware_version = info.identity, info.firmware_version
    for field, call in (("status", device.get_status), ("bootstatus", device.get_bootstatus),
                        ("timeout", device.get_timeout), ("pretimeout", device.get_pretimeout),
                        ("timeleft", device.get_timeleft)):
        try:
            setattr(snapshot, field, call())
            snapshot.unsupported.discard(field)
        except OSError as err:
            if watchdog.is_unsupported(err):
                snapshot.unsupported.add(field)
    snapshot.options = info.options
