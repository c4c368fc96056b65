"""The watchdog core library: _IOC numbers per arch, struct watchdog_info, the WDIOC calls,
sysfs in every format the kernel writes, and the probe's open-only-when-safe rule."""

import errno
import os
import signal
import stat
import struct
import sys

import pytest

from hamtools.core import ioc, watchdog, watchdog_probe, watchdog_sysfs
from tests import wdt_fakes
from tests.wdt_fakes import DEVICE, SOFTDOG_6_1, SOFTDOG_NEW, FakeDriver, make_sysfs

# The reference's table (linux_watchdog.md §1.2): name, generic, mips/powerpc/sparc/alpha, parisc.
REFERENCE = [
    ("GETSUPPORT", 0x80285700, 0x40285700, 0x40285700),
    ("GETSTATUS", 0x80045701, 0x40045701, 0x40045701),
    ("GETBOOTSTATUS", 0x80045702, 0x40045702, 0x40045702),
    ("GETTEMP", 0x80045703, 0x40045703, 0x40045703),
    ("SETOPTIONS", 0x80045704, 0x40045704, 0x40045704),
    ("KEEPALIVE", 0x80045705, 0x40045705, 0x40045705),
    ("SETTIMEOUT", 0xC0045706, 0xC0045706, 0xC0045706),
    ("GETTIMEOUT", 0x80045707, 0x40045707, 0x40045707),
    ("SETPRETIMEOUT", 0xC0045708, 0xC0045708, 0xC0045708),
    ("GETPRETIMEOUT", 0x80045709, 0x40045709, 0x40045709),
    ("GETTIMELEFT", 0x8004570A, 0x4004570A, 0x4004570A),
]


@pytest.mark.parametrize("name,generic,three_bit,parisc", REFERENCE, ids=[r[0] for r in REFERENCE])
def test_wdioc_numbers_match_the_reference_for_every_layout(name, generic, three_bit, parisc):
    assert getattr(watchdog.Requests(ioc.GENERIC), name) == generic
    assert getattr(watchdog.Requests(ioc.THREE_BIT_DIR), name) == three_bit
    assert getattr(watchdog.Requests(ioc.PARISC), name) == parisc


@pytest.mark.parametrize("machine,layout", [
    ("x86_64", ioc.GENERIC), ("aarch64", ioc.GENERIC), ("armv7l", ioc.GENERIC),
    ("riscv64", ioc.GENERIC), ("i686", ioc.GENERIC), ("mips", ioc.THREE_BIT_DIR),
    ("mips64el", ioc.THREE_BIT_DIR), ("ppc", ioc.THREE_BIT_DIR), ("ppc64le", ioc.THREE_BIT_DIR),
    ("sparc64", ioc.THREE_BIT_DIR), ("alpha", ioc.THREE_BIT_DIR), ("parisc", ioc.PARISC),
    ("parisc64", ioc.PARISC),
])
def test_layout_follows_uname_machine(machine, layout):
    assert ioc.layout_for(machine) is layout


def test_native_layout_is_this_machines():
    assert ioc.NATIVE is ioc.layout_for(os.uname().machine)
    assert watchdog.WDIOC.GETSUPPORT == watchdog.Requests(ioc.NATIVE).GETSUPPORT


def test_io_and_iow_directions():
    # _IO has no direction on generic, _IOC_NONE (1) at bit 29 on mips; _IOW is 1 << 30 / 4 << 29.
    assert ioc.io("W", 1, ioc.GENERIC) == 0x5701
    assert ioc.io("W", 1, ioc.THREE_BIT_DIR) == 0x20005701
    assert ioc.iow("W", 1, 4, ioc.GENERIC) == 0x40045701
    assert ioc.iow("W", 1, 4, ioc.THREE_BIT_DIR) == 0x80045701
    assert ioc.iow("W", 1, 4, ioc.PARISC) == 0x80045701


def test_size_must_fit_the_layout():
    assert ioc.ior("W", 0, (1 << 14) - 1, ioc.GENERIC)
    with pytest.raises(ValueError):
        ioc.ior("W", 0, 1 << 13, ioc.THREE_BIT_DIR)


def test_struct_watchdog_info_is_40_bytes_in_native_order():
    assert watchdog.WATCHDOG_INFO.size == 40
    raw = ((0x8180).to_bytes(4, sys.byteorder) + (0x12).to_bytes(4, sys.byteorder)
           + b"i6300ESB timer".ljust(32, b"\0"))
    info = watchdog.WatchdogInfo.unpack(raw)
    assert (info.options, info.firmware_version, info.identity) == (0x8180, 0x12, "i6300ESB timer")


def test_identity_that_fills_all_32_bytes_is_kept_whole():
    info = watchdog.WatchdogInfo.unpack(struct.pack("=II32s", 0, 0, b"X" * 32))
    assert info.identity == "X" * 32


def test_flag_names_in_wdctl_order_with_unknown_bits():
    assert watchdog.flag_names(0x8180) == ["KEEPALIVEPING", "MAGICCLOSE", "SETTIMEOUT"]
    assert watchdog.flag_names(0x0821) == ["CARDRESET", "OVERHEAT", "0x800"]
    assert watchdog.flag_names(0) == []


def test_every_call_uses_its_request_and_a_pointer(tmp_path):
    driver = FakeDriver(tmp_path, timeleft=42, bootstatus=0x20, round_timeout_to=2)
    device = driver.open(DEVICE)
    assert driver.calls == ["GETSUPPORT"]  # asked at the open, before anything else
    assert (device.info.identity, device.info.options) == ("Software Watchdog", 0x8180)
    info = device.get_support()
    assert (info.identity, info.options) == ("Software Watchdog", 0x8180)
    assert device.get_status() == 0x8000
    assert device.get_bootstatus() == 0x20
    assert device.get_timeout() == 60
    assert device.set_timeout(7) == 8  # the driver's rounding comes back
    device.set_pretimeout(3)
    assert device.get_pretimeout() == 3
    assert device.get_timeleft() == 42
    device.keepalive()
    device.set_options(watchdog.WDIOS_ENABLECARD)
    with pytest.raises(OSError) as caught:
        device.get_temp()
    assert watchdog.is_unsupported(caught.value)
    # Names, not hex numbers: every request watchdog.py sent is one the fake knows.
    assert driver.calls == ["GETSUPPORT", "GETSUPPORT", "GETSTATUS", "GETBOOTSTATUS",
                            "GETTIMEOUT", "SETTIMEOUT", "SETPRETIMEOUT", "GETPRETIMEOUT",
                            "GETTIMELEFT", "KEEPALIVE", "SETOPTIONS", "GETTEMP"]
    device.close()


def test_the_fakes_numbers_are_the_references_for_this_machine():
    # The fake computes its numbers with ioc for the running arch; check them against the
    # reference's table, in the column of this machine's layout.
    column = {ioc.GENERIC: 1, ioc.THREE_BIT_DIR: 2, ioc.PARISC: 3}[ioc.NATIVE]
    for row in REFERENCE:
        assert getattr(wdt_fakes, row[0]) == row[column] == getattr(watchdog.WDIOC, row[0])


def test_ping_writes_a_byte_and_magic_close_writes_v_last(tmp_path):
    driver = FakeDriver(tmp_path)
    device = driver.open(DEVICE)
    device.ping()
    device.ping()
    fd = device.fd
    device.magic_close()
    assert driver.writes() == b"\0\0V"
    assert device.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)  # really closed
    plain = driver.open(DEVICE)
    plain.close()
    assert driver.writes() == b"\0\0V"  # close() alone writes nothing


def test_a_character_device_without_getsupport_is_closed_unwritten(monkeypatch):
    # /dev/null opens, and answers WDIOC_GETSUPPORT with ENOTTY as any non-watchdog does.
    opened, closed, written = [], [], []
    real_open, real_close = os.open, os.close
    monkeypatch.setattr(os, "open", lambda *a: opened.append(real_open(*a)) or opened[-1])
    monkeypatch.setattr(os, "close", lambda fd: closed.append(fd) or real_close(fd))
    monkeypatch.setattr(os, "write", lambda fd, data: written.append(data))
    with pytest.raises(watchdog.NotAWatchdog) as caught:
        watchdog.Watchdog.open(DEVICE)
    assert caught.value.errno == errno.ENOTTY and caught.value.filename == DEVICE
    assert watchdog.describe_error(caught.value) == (
        "not a watchdog device (it does not answer WDIOC_GETSUPPORT)")
    assert len(opened) == 1 and closed == opened and written == []


@pytest.mark.parametrize("kind", ["regular file", "directory", "FIFO"])
def test_what_is_no_character_device_is_never_opened(tmp_path, monkeypatch, kind):
    path = tmp_path / "node"
    if kind == "regular file":
        path.write_bytes(b"DATA")
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)  # an open for writing would block here
    opened = []
    monkeypatch.setattr(os, "open", lambda *a: opened.append(a))
    with pytest.raises(watchdog.NotAWatchdog) as caught:
        watchdog.session(str(path), lambda device: pytest.fail("body ran"), disarm=True)
    assert opened == [] and str(caught.value.strerror) == f"a {kind}"
    if kind == "regular file":
        assert path.read_bytes() == b"DATA"


def test_a_driver_failing_getsupport_otherwise_keeps_its_errno(tmp_path):
    driver = FakeDriver(tmp_path, failing={"GETSUPPORT": errno.ENODEV})  # unbound meanwhile
    with pytest.raises(OSError) as caught:
        driver.open(DEVICE)
    assert caught.value.errno == errno.ENODEV and not isinstance(caught.value,
                                                                 watchdog.NotAWatchdog)
    assert driver.writes() == b""


@pytest.mark.parametrize("number,identity,text", [
    (errno.EOPNOTSUPP, "i6300ESB timer", "not supported by i6300ESB timer"),
    (errno.ENOTTY, None, "not supported by this driver"),
    (errno.EBUSY, None, "device busy: another process holds it"),
    (errno.EACCES, None, "permission denied"),
    (errno.ENOENT, None, "no such device"),
    (errno.EIO, None, "input/output error"),
])
def test_error_wording(number, identity, text):
    assert watchdog.describe_error(OSError(number, os.strerror(number)), identity).startswith(text)


# ---- sysfs ----------------------------------------------------------------------------------

def test_every_attribute_format(tmp_path):
    directory = make_sysfs(tmp_path, {
        "identity": "iTCO_wdt\n", "fw_version": "10\n", "options": "0x8380\n",
        "status": "0x20\n", "bootstatus": "32\n", "timeout": "30\n", "timeleft": "29\n",
        "pretimeout": "5\n", "min_timeout": "2\n", "max_timeout": "613\n", "nowayout": "1\n",
        "state": "active\n", "pretimeout_governor": "panic\n",
        "pretimeout_available_governors": "panic\nnoop\n",
    })
    assert watchdog_sysfs.read_attributes(str(directory)) == {
        "identity": "iTCO_wdt", "fw_version": 10, "options": 0x8380, "status": 0x20,
        "bootstatus": 32, "timeout": 30, "timeleft": 29, "pretimeout": 5, "min_timeout": 2,
        "max_timeout": 613, "nowayout": 1, "state": "active", "pretimeout_governor": "panic",
        "pretimeout_available_governors": ["panic", "noop"],
    }


def test_hex_and_decimal_attributes_are_not_confused(tmp_path):
    # status and options are "0x%x"; bootstatus and fw_version "%u"/"%d": "10" is ten.
    directory = str(make_sysfs(tmp_path, {"status": "0x10\n", "bootstatus": "10\n",
                                          "fw_version": "10\n", "options": "0x10\n"}))
    values = watchdog_sysfs.read_attributes(directory)
    assert values == {"status": 16, "bootstatus": 10, "fw_version": 10, "options": 16}


def test_empty_governor_and_unparsable_values(tmp_path):
    directory = str(make_sysfs(tmp_path, {"pretimeout_governor": "\n", "timeout": "soon\n",
                                          "state": "inactive\n"}))
    values = watchdog_sysfs.read_attributes(directory)
    assert values == {"pretimeout_governor": "", "state": "inactive"}
    assert watchdog_sysfs.read_attribute(directory, "timeleft") is None


def test_device_node_maps_to_its_sysfs_dir_through_dev_char(tmp_path):
    directory = make_sysfs(tmp_path, SOFTDOG_6_1)
    assert watchdog_sysfs.device_dir(DEVICE, str(tmp_path)) == str(
        tmp_path / "dev" / "char" / wdt_fakes.DEVICE_NUMBER)
    assert os.path.realpath(watchdog_sysfs.device_dir(DEVICE, str(tmp_path))) == str(directory)


def test_device_without_watchdog_attributes_has_no_sysfs_dir(tmp_path):
    (tmp_path / "dev" / "char" / wdt_fakes.DEVICE_NUMBER).mkdir(parents=True)  # a non-watchdog
    assert watchdog_sysfs.device_dir(DEVICE, str(tmp_path)) is None
    regular = tmp_path / "file"
    regular.write_text("")
    assert watchdog_sysfs.device_dir(str(regular), str(tmp_path)) is None
    with pytest.raises(FileNotFoundError):
        watchdog_sysfs.device_dir(str(tmp_path / "missing"), str(tmp_path))


def test_legacy_misc_node_maps_to_watchdog0(tmp_path):
    node = tmp_path / "watchdog"
    try:
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(10, 130))
    except PermissionError:
        pytest.skip("mknod needs root")
    directory = make_sysfs(tmp_path, SOFTDOG_6_1, number=None)
    assert watchdog_sysfs.device_dir(str(node), str(tmp_path)) == str(directory)


def test_list_devices_in_numeric_order(tmp_path):
    for name in ("watchdog10", "watchdog2", "watchdog0"):
        make_sysfs(tmp_path, {"identity": name + "\n"}, name=name, number=None)
    (tmp_path / "class" / "watchdog" / "not-a-watchdog").mkdir()
    names = [name for name, _ in watchdog_sysfs.list_devices(str(tmp_path))]
    assert names == ["watchdog0", "watchdog2", "watchdog10"]
    assert watchdog_sysfs.list_devices(str(tmp_path / "nothing")) == []


def test_write_attribute_adds_the_newline(tmp_path):
    directory = make_sysfs(tmp_path, {"pretimeout_governor": "noop\n"})
    watchdog_sysfs.write_attribute(str(directory), "pretimeout_governor", "panic")
    assert (directory / "pretimeout_governor").read_text() == "panic\n"


# ---- probe: sysfs first, the device only when needed and safe ------------------------------

@pytest.fixture
def driver(tmp_path, monkeypatch):
    fake = FakeDriver(tmp_path)
    monkeypatch.setattr(watchdog.Watchdog, "open", classmethod(lambda cls, path: fake.open(path)))
    return fake


def test_complete_sysfs_never_opens(tmp_path, driver):
    make_sysfs(tmp_path, SOFTDOG_NEW)
    snap = watchdog_probe.probe(DEVICE, sys_root=str(tmp_path))
    assert not snap.opened and driver.calls == []
    assert (snap.identity, snap.options, snap.firmware_version, snap.timeout) == (
        "Software Watchdog", 0x8180, 0, 60)
    assert "timeleft" in snap.unsupported  # hidden attribute: the driver cannot tell


def test_old_sysfs_opens_and_magic_closes_with_signals_blocked(tmp_path, driver):
    make_sysfs(tmp_path, SOFTDOG_6_1)
    seen = []
    real_ioctl = driver.ioctl

    def ioctl(fd, request, buf, mutate):
        seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        return real_ioctl(fd, request, buf, mutate)

    driver.ioctl = ioctl
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    snap = watchdog_probe.probe(DEVICE, sys_root=str(tmp_path))
    assert snap.opened and snap.options == 0x8180 and snap.firmware_version == 0
    assert driver.writes() == b"V"
    assert all(signal.SIGINT in mask and signal.SIGTERM in mask for mask in seen)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert "timeleft" in snap.unsupported and snap.timeleft is None


@pytest.mark.parametrize("attribute,value,reason", [
    ("nowayout", "1\n", "nowayout is set"), ("state", "active\n", "it is active"),
    ("nowayout", None, "nowayout could not be read from sysfs"),  # open only if known to be 0
])
def test_unsafe_device_is_not_opened(tmp_path, driver, attribute, value, reason):
    attributes = {**SOFTDOG_6_1, attribute: value}
    make_sysfs(tmp_path, {k: v for k, v in attributes.items() if v is not None})
    snap = watchdog_probe.probe(DEVICE, sys_root=str(tmp_path))
    assert not snap.opened and driver.calls == [] and driver.writes() == b""
    assert reason in snap.not_opened
    assert snap.missing(watchdog_probe.INFO_FIELDS) == ["options", "firmware_version"]


def test_busy_device_with_sysfs_gives_what_sysfs_has(tmp_path, driver):
    driver.busy = True
    make_sysfs(tmp_path, SOFTDOG_6_1)
    snap = watchdog_probe.probe(DEVICE, sys_root=str(tmp_path))
    assert snap.identity == "Software Watchdog" and snap.options is None
    assert snap.not_opened.startswith("opening it failed: device busy")


def test_busy_device_without_sysfs_raises(tmp_path, driver):
    driver.busy = True
    with pytest.raises(OSError) as caught:
        watchdog_probe.probe(DEVICE, sys_root=str(tmp_path))
    assert caught.value.errno == errno.EBUSY


def test_no_sysfs_reads_everything_from_the_device(tmp_path, driver):
    driver.timeleft, driver.bootstatus = 12, 0x20
    snap = watchdog_probe.probe(DEVICE, sys_root=str(tmp_path))
    assert snap.opened and snap.sysfs_dir is None
    assert (snap.timeleft, snap.bootstatus, snap.pretimeout) == (12, 0x20, 0)
    assert snap.flag_bits() == 0x8180 | 0x8000 | 0x20  # status and boot bits get rows too


def test_wanting_nothing_never_opens(tmp_path, driver):
    snap = watchdog_probe.probe(DEVICE, wanted=(), sys_root=str(tmp_path))
    assert not snap.opened and driver.calls == []


def test_default_device_prefers_watchdog0(monkeypatch):
    present = {"/dev/watchdog"}
    monkeypatch.setattr(os.path, "exists", lambda path: path in present)
    assert watchdog_probe.default_device() == "/dev/watchdog"
    present.add("/dev/watchdog0")
    assert watchdog_probe.default_device() == "/dev/watchdog0"
    present.clear()
    assert watchdog_probe.default_device() is None
