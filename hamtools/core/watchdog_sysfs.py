"""A watchdog's sysfs attributes (/sys/class/watchdog/watchdogN), read without opening it.

Opening a watchdog starts it, so everything that can be learnt from sysfs is learnt here. The
attributes exist only with CONFIG_WATCHDOG_SYSFS; `options` and `fw_version` only on kernels
from 2023 on; `timeleft` only if the driver can tell; `pretimeout*` only if pretimeouts are
supported. The root ("/sys") is a parameter so tests can use a fake tree.
"""

import os
import stat

# attribute -> how the kernel prints it (drivers/watchdog/watchdog_dev.c)
_HEX = ("options", "status")  # "0x%x"
_DECIMAL = ("fw_version", "bootstatus", "timeout", "timeleft", "pretimeout", "min_timeout",
            "max_timeout", "nowayout")  # "%d" / "%u"
_TEXT = ("identity", "state", "pretimeout_governor")  # "%s"
_LINES = ("pretimeout_available_governors",)  # one name per line

# The legacy /dev/watchdog misc device (char 10:130) has no watchdog attributes of its own;
# the watchdog core registers it only for watchdog0.
_MISC_WATCHDOG = (10, 130)


def class_dir(sys_root: str = "/sys") -> str:
    return os.path.join(sys_root, "class", "watchdog")


def device_dir(device: str, sys_root: str = "/sys") -> str | None:
    """The sysfs directory of a device node (via /sys/dev/char/MAJ:MIN), or None.

    Raises OSError if the node itself cannot be stat()ed (FileNotFoundError: no such node).
    """
    st = os.stat(device)
    if not stat.S_ISCHR(st.st_mode):
        return None
    number = (os.major(st.st_rdev), os.minor(st.st_rdev))
    candidates = [os.path.join(sys_root, "dev", "char", "%d:%d" % number)]
    if number == _MISC_WATCHDOG:
        candidates.append(os.path.join(class_dir(sys_root), "watchdog0"))
    for directory in candidates:
        # Usable only if it is a watchdog's directory (the test wdctl makes too).
        if os.path.exists(os.path.join(directory, "identity")):
            return directory
    return None


def read_attributes(directory: str) -> dict:
    """Every readable watchdog attribute, parsed; absent or unreadable ones are left out."""
    values = {}
    for name in _HEX + _DECIMAL + _TEXT + _LINES:
        value = read_attribute(directory, name)
        if value is not None:
            values[name] = value
    return values


def read_attribute(directory: str, name: str):
    """One attribute parsed (int, str, or list of str), or None if absent or unreadable."""
    try:
        with open(os.path.join(directory, name), "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:  # hidden, or the driver failed the read (e.g. timeleft)
        return None
    try:
        return _parse(name, raw)
    except ValueError:  # not what the kernel writes: better unknown than wrong
        return None


def _parse(name: str, raw: str):
    text = raw.strip()
    if name in _HEX:
        return int(text, 16)
    if name in _DECIMAL:
        return int(text, 10)
    if name in _LINES:
        return text.split()
    return text


def write_attribute(directory: str, name: str, value: str) -> None:
    with open(os.path.join(directory, name), "w") as f:
        f.write(value + "\n")


def list_devices(sys_root: str = "/sys") -> list[tuple[str, str]]:
    """(name, directory) of every registered watchdog, watchdog0 first."""
    try:
        names = os.listdir(class_dir(sys_root))
    except FileNotFoundError:
        return []
    found = [n for n in names if n.startswith("watchdog") and n[8:].isdigit()]
    found.sort(key=lambda n: int(n[8:]))
    return [(n, os.path.join(class_dir(sys_root), n)) for n in found]
