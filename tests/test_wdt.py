"""`wdt` against a fake sysfs tree and a fake driver: output, exit codes, error lines, the
no-typer fast path, paths that are no watchdog (a file, /dev/null, a FIFO: refused with not
a byte written), and `feed` (busybox-compatible) on the fake driver in a process of its own
(tests.wdt_fakes as a program). The real drivers are in test_wdt_vm.py."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from hamtools import multicall
from hamtools.applets import wdt, wdt_feed
from hamtools.core import watchdog
from hamtools.core.errors import AppletError
from tests.conftest import ROOT
from tests.wdt_fakes import DEVICE, SOFTDOG_6_1, SOFTDOG_NEW, FakeDriver, make_sysfs


@pytest.fixture
def sysroot(tmp_path, monkeypatch):
    root = tmp_path / "sys"
    monkeypatch.setenv("HAMTOOLS_SYSFS", str(root))
    return root


@pytest.fixture
def driver(tmp_path, monkeypatch):
    fake = FakeDriver(tmp_path)
    monkeypatch.setattr(watchdog.Watchdog, "open", classmethod(lambda cls, path: fake.open(path)))
    return fake


def run(capsys, *args):
    code = multicall.main(["hamtools", "wdt", *args])
    out, err = capsys.readouterr()
    return code, out, err


# wdctl's output for softdog, from the reference (a real wdctl run; Device line ours).
WDCTL_SOFTDOG = """\
Device:        /dev/null
Identity:      Software Watchdog [version 0]
Timeout:       60 seconds
Pre-timeout:    0 seconds
Pre-timeout governor: noop
Available pre-timeout governors: panic noop
FLAG           DESCRIPTION               STATUS BOOT-STATUS
KEEPALIVEPING  Keep alive ping reply          1           0
MAGICCLOSE     Supports magic close char      0           0
SETTIMEOUT     Set timeout (in seconds)       0           0
"""


def test_info_from_sysfs_alone_is_wdctls_text(capsys, sysroot, driver):
    make_sysfs(sysroot, SOFTDOG_NEW)
    assert run(capsys, "-d", DEVICE, "info") == (0, WDCTL_SOFTDOG, "")
    assert driver.calls == []


def test_info_after_a_watchdog_reset_has_the_cardreset_row(capsys, sysroot, driver):
    # i6300esb after it reset the VM: wdctl's rows and column widths (reference / qemu-wdt).
    make_sysfs(sysroot, {**SOFTDOG_NEW, "identity": "i6300ESB timer\n", "timeout": "30\n",
                         "status": "0x8220\n", "bootstatus": "32\n", "timeleft": "29\n"})
    code, out, _ = run(capsys, "--device", DEVICE, "info")
    assert code == 0
    assert out.splitlines()[2:4] == ["Timeout:       30 seconds", "Timeleft:      29 seconds"]
    assert out.splitlines()[-6:] == [
        "FLAG           DESCRIPTION                   STATUS BOOT-STATUS",
        "CARDRESET      Card previously reset the CPU      1           1",
        "KEEPALIVEPING  Keep alive ping reply              1           0",
        "MAGICCLOSE     Supports magic close char          0           0",
        "PRETIMEOUT     Pretimeout (in seconds)            1           0",
        "SETTIMEOUT     Set timeout (in seconds)           0           0",
    ]


def test_info_on_an_old_kernel_opens_the_stopped_device_and_magic_closes(capsys, sysroot, driver):
    make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, f"-d{DEVICE}", "info") == (0, WDCTL_SOFTDOG, "")
    assert driver.writes() == b"V"


def test_info_never_opens_a_nowayout_device(capsys, sysroot, driver):
    make_sysfs(sysroot, {**SOFTDOG_6_1, "nowayout": "1\n"})
    code, out, err = run(capsys, "-d", DEVICE, "info")
    assert code == 0 and driver.calls == [] and driver.writes() == b""
    assert out == "Device:        /dev/null\nIdentity:      Software Watchdog\n" + \
        "\n".join(WDCTL_SOFTDOG.splitlines()[2:6]) + "\n"
    assert err == ("wdt: info: flags, firmware version unknown: sysfs lacks them and /dev/null "
                   "was not opened: nowayout is set, so opening it would arm it for good\n")


def test_info_json(capsys, sysroot, driver):
    make_sysfs(sysroot, {**SOFTDOG_NEW, "state": "active\n", "nowayout": "1\n"})
    code, out, _ = run(capsys, "-d", DEVICE, "info", "--json")
    data = json.loads(out)
    assert code == 0 and data["identity"] == "Software Watchdog"
    assert (data["state"], data["nowayout"], data["opened"], data["options"]) == (
        "active", True, False, 0x8180)
    assert data["available_governors"] == ["panic", "noop"]
    assert [f["flag"] for f in data["flags"]] == ["KEEPALIVEPING", "MAGICCLOSE", "SETTIMEOUT"]
    assert data["flags"][0] == {"flag": "KEEPALIVEPING", "description": "Keep alive ping reply",
                                "status": True, "boot_status": False}


def test_list(capsys, sysroot):
    make_sysfs(sysroot, {**SOFTDOG_6_1, "state": "active\n", "timeout": "5\n"})
    make_sysfs(sysroot, {"identity": "iTCO_wdt\n", "timeout": "30\n", "timeleft": "12\n",
                         "nowayout": "1\n", "state": "inactive\n"}, name="watchdog1", number=None)
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert out.splitlines() == [
        "DEVICE          IDENTITY          STATE    TIMEOUT TIMELEFT NOWAYOUT",
        "/dev/watchdog0  Software Watchdog active         5        -        0",
        "/dev/watchdog1  iTCO_wdt          inactive      30       12        1",
    ]
    code, out, _ = run(capsys, "list", "--json")
    assert json.loads(out)[1] == {"device": "/dev/watchdog1", "identity": "iTCO_wdt",
                                  "state": "inactive", "timeout": 30, "timeleft": 12,
                                  "nowayout": 1}


def test_list_without_watchdogs(capsys, sysroot):
    code, out, err = run(capsys, "list", "--json")
    assert (code, out) == (3, "[]\n")
    assert err == f"wdt: list: no watchdog in {sysroot}/class/watchdog\n"


def test_timeleft(capsys, sysroot, driver):
    directory = make_sysfs(sysroot, {**SOFTDOG_6_1, "timeleft": "17\n"})
    assert run(capsys, "-d", DEVICE, "timeleft") == (0, "17\n", "")
    assert json.loads(run(capsys, "-d", DEVICE, "timeleft", "--json")[1])["timeleft"] == 17
    (directory / "timeleft").unlink()  # softdog: the attribute is hidden
    assert run(capsys, "-d", DEVICE, "timeleft") == (
        1, "", "wdt: timeleft: not supported by Software Watchdog\n")
    assert driver.calls == []


def test_timeleft_from_the_device_when_there_is_no_sysfs(capsys, sysroot, driver):
    driver.timeleft = 9
    assert run(capsys, "-d", DEVICE, "timeleft") == (0, "9\n", "")
    assert driver.writes() == b"V"


@pytest.mark.parametrize("bits,code,text", [
    ("32", 0, "/dev/null: the last reset came from the watchdog "
              "(CARDRESET: Card previously reset the CPU)\n"),
    ("0", 1, "/dev/null: the last reset did not come from the watchdog\n"),
    ("32768", 1, "/dev/null: the last reset did not come from the watchdog "
                 "(boot status KEEPALIVEPING)\n"),
])
def test_bootstatus(capsys, sysroot, bits, code, text):
    make_sysfs(sysroot, {**SOFTDOG_6_1, "bootstatus": bits + "\n"})
    assert run(capsys, "-d", DEVICE, "bootstatus") == (code, text, "")
    data = json.loads(run(capsys, "-d", DEVICE, "bootstatus", "--json")[1])
    assert data["watchdog_reset"] is (code == 0) and data["bootstatus"] == int(bits)


def test_no_such_device_exits_3(capsys, sysroot):
    assert run(capsys, "-d", "/nonexistent/watchdog9", "info") == (
        3, "", "wdt: info: /nonexistent/watchdog9: no such device\n")


# Every command that opens the device, as the user types it.
OPENING_COMMANDS = [["info"], ["timeleft"], ["bootstatus"], ["set-timeout", "10"],
                    ["set-pretimeout", "0"], ["ping"], ["enable"], ["magic-close"],
                    ["disable"], ["feed", "-F"]]


@pytest.fixture
def within_10_seconds():
    """Fail a test that hangs (a `feed -F` feeding a non-watchdog would never return)."""
    def expired(signum, frame):
        pytest.fail("still running after 10 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, 10)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def device_writes(monkeypatch):
    """Every os.write, as (st_rdev of a character device or the path's inode, data)."""
    seen = []
    real_write = os.write

    def write(fd, data):
        st = os.fstat(fd)
        seen.append((st.st_rdev if stat.S_ISCHR(st.st_mode) else None, st.st_ino, bytes(data)))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return seen


@pytest.mark.parametrize("command", OPENING_COMMANDS, ids=lambda c: c[0])
def test_a_regular_file_is_refused_unwritten(capsys, sysroot, tmp_path, within_10_seconds,
                                             command):
    # The review's reproduction: `wdt -d FILE info` turned DATA into VATA.
    target = tmp_path / "not-a-watchdog"
    target.write_bytes(b"DATA")
    before = target.stat()
    assert run(capsys, "-d", str(target), *command) == (
        1, "", f"wdt: {command[0]}: {target}: not a watchdog device (a regular file)\n")
    assert target.read_bytes() == b"DATA" and target.stat().st_mtime_ns == before.st_mtime_ns


@pytest.mark.parametrize("command", OPENING_COMMANDS, ids=lambda c: c[0])
def test_a_character_device_that_is_no_watchdog_gets_no_byte(capsys, sysroot, device_writes,
                                                              within_10_seconds, command):
    # /dev/null is real here: it opens, and its ioctls answer ENOTTY as a non-watchdog's do.
    null_rdev = os.stat(DEVICE).st_rdev
    assert run(capsys, "-d", DEVICE, *command) == (
        1, "", f"wdt: {command[0]}: {DEVICE}: not a watchdog device "
               "(it does not answer WDIOC_GETSUPPORT)\n")
    assert [w for w in device_writes if w[0] == null_rdev] == []


def test_a_fifo_is_refused_before_the_open(tmp_path):
    # Opening a FIFO for writing would wait for a reader forever: the type is checked first.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "hamtools", "wdt", "-d", str(fifo), "ping"],
                          cwd=ROOT, capture_output=True, text=True, timeout=20,
                          env={**os.environ, "HAMTOOLS_SYSFS": str(tmp_path / "sys")})
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"wdt: ping: {fifo}: not a watchdog device (a FIFO)\n")


def test_ebusy_and_eacces_lines(capsys, sysroot, driver, monkeypatch):
    driver.busy = True
    code, _, err = run(capsys, "-d", DEVICE, "set-timeout", "10")
    assert code == 1 and err == ("wdt: set-timeout: /dev/null: device busy: another process "
                                 "holds it (a watchdog daemon, systemd, wdt feed)\n")

    def denied(cls, path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(watchdog.Watchdog, "open", classmethod(denied))
    code, _, err = run(capsys, "-d", DEVICE, "magic-close")
    assert code == 1 and err == ("wdt: magic-close: /dev/null: permission denied "
                                 "(watchdogs are usually root's)\n")


def test_set_timeout_reports_what_the_driver_took_and_leaves_it_stopped(capsys, sysroot, driver):
    driver.round_to = 2
    make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, "-d", DEVICE, "set-timeout", "7") == (
        0, "Timeout has been set to 8 seconds.\n", "")
    assert driver.timeout == 8 and driver.writes() == b"V"


def test_set_timeout_keeps_an_active_watchdog_armed(capsys, sysroot, driver):
    make_sysfs(sysroot, {**SOFTDOG_6_1, "state": "active\n"})
    assert run(capsys, "-d", DEVICE, "set-timeout", "1")[1] == "Timeout has been set to 1 second.\n"
    assert driver.writes() == b""  # no 'V': it stays armed


def test_set_timeout_refuses_to_arm_a_nowayout_watchdog(capsys, sysroot, driver):
    make_sysfs(sysroot, {**SOFTDOG_6_1, "nowayout": "1\n"})
    code, _, err = run(capsys, "-d", DEVICE, "set-timeout", "10")
    assert code == 1 and driver.calls == []
    assert "is stopped and nowayout is set: opening it would arm it for good" in err
    assert run(capsys, "-d", DEVICE, "set-timeout", "10", "--force")[0] == 0


@pytest.mark.parametrize("args,err", [
    (["set-timeout", "70000"], "wdt: set-timeout 70000: invalid value for Software Watchdog: "
                               "allowed 1..65535 s\n"),
    (["set-pretimeout", "60"], "wdt: set-pretimeout 60: invalid value for Software Watchdog: "
                               "it must be less than the timeout (60 s)\n"),
])
def test_invalid_values(capsys, sysroot, driver, args, err):
    make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, "-d", DEVICE, *args) == (1, "", err)
    assert driver.writes() == b"V"  # closed disarmed even though it failed


@pytest.mark.parametrize("args,line", [
    (["set-timeout", "x"], "wdt: set-timeout: invalid value 'x': expected whole seconds, "
                           "1..4294967"),
    (["set-timeout", "0"], "wdt: set-timeout: invalid value '0': expected whole seconds, "
                           "1..4294967"),
    (["set-timeout", "-5"], "wdt: set-timeout: invalid value '-5': expected whole seconds, "
                            "1..4294967"),
    (["set-timeout", "4294968"], "wdt: set-timeout: invalid value '4294968': expected whole "
                                 "seconds, 1..4294967"),
    (["set-timeout", "1.5"], "wdt: set-timeout: invalid value '1.5': expected whole seconds, "
                             "1..4294967"),
    (["set-timeout", "\u0663"], "wdt: set-timeout: invalid value '\u0663': expected whole "
                                "seconds, 1..4294967"),  # int() would take an Arabic 3
    (["set-pretimeout", "-1"], "wdt: set-pretimeout: invalid value '-1': expected whole "
                               "seconds, 0..4294967"),
    (["set-pretimeout", "soon"], "wdt: set-pretimeout: invalid value 'soon': expected whole "
                                 "seconds, 0..4294967"),
    (["feed", "-F", "-T", "0"], "wdt: feed: invalid timeout -T '0': expected N (seconds) or "
                                "Nms, 1 s..4294967 s"),
    (["feed", "-F", "-t", "0ms"], "wdt: feed: invalid period -t '0ms': expected N (seconds) "
                                  "or Nms, 1ms..4294967 s"),
    (["set-timeout"], "wdt: set-timeout: Missing argument 'N' (try 'wdt set-timeout -h')"),
    (["set-timeout", "5", "6"], "wdt: set-timeout: Got unexpected extra argument(s) (6) "
                                "(try 'wdt set-timeout -h')"),
    (["frobnicate"], "wdt: No such command 'frobnicate' (try 'wdt -h')"),
    (["info", "--bogus"], "wdt: info: No such option: --bogus (try 'wdt info -h')"),
])
def test_usage_errors_are_one_line_exit_2_and_open_nothing(capsys, sysroot, driver, args, line):
    make_sysfs(sysroot, SOFTDOG_6_1)
    code, out, err = run(capsys, "-d", DEVICE, *args)
    assert (code, out, err) == (2, "", line + "\n")
    assert driver.calls == [] and driver.writes() == b""


@pytest.mark.parametrize("sysfs,options,failing,args,line", [
    # softdog's identity from sysfs; a driver without WDIOF_SETTIMEOUT: the core's EOPNOTSUPP
    (True, 0x8100, {}, ["set-timeout", "10"],
     "wdt: set-timeout: not supported by Software Watchdog"),
    # no sysfs: the identity is the driver's own answer to GETSUPPORT
    (False, 0x8100, {}, ["set-timeout", "10"],
     "wdt: set-timeout: not supported by Software Watchdog"),
    (True, 0x8180, {"SETPRETIMEOUT": errno.EOPNOTSUPP}, ["set-pretimeout", "5"],
     "wdt: set-pretimeout: not supported by Software Watchdog"),
    # a legacy driver's own ioctl handler that knows no SETOPTIONS
    (False, 0x8180, {"SETOPTIONS": errno.ENOTTY}, ["disable"],
     "wdt: disable: not supported by Software Watchdog"),
])
def test_unsupported_requests_name_the_driver(capsys, sysroot, driver, sysfs, options, failing,
                                              args, line):
    if sysfs:
        make_sysfs(sysroot, SOFTDOG_6_1)
    driver.options, driver.failing = options, failing
    assert run(capsys, "-d", DEVICE, *args) == (1, "", line + "\n")
    assert driver.writes() == b"V"  # opened on a stopped watchdog: closed stopped again


def test_info_without_a_readable_nowayout_does_not_open(capsys, sysroot, driver):
    # The reference (wdctl): open only when nowayout is known to be 0.
    make_sysfs(sysroot, {k: v for k, v in SOFTDOG_6_1.items() if k != "nowayout"})
    code, out, err = run(capsys, "-d", DEVICE, "info")
    assert code == 0 and driver.calls == [] and driver.writes() == b""
    assert out.splitlines()[:3] == ["Device:        /dev/null", "Identity:      Software Watchdog",
                                    "Timeout:       60 seconds"]
    assert err == ("wdt: info: flags, firmware version unknown: sysfs lacks them and /dev/null "
                   "was not opened: nowayout could not be read from sysfs, and if set, opening "
                   "it would arm it for good\n")
    assert json.loads(run(capsys, "-d", DEVICE, "info", "--json")[1])["not_opened"] == (
        "nowayout could not be read from sysfs, and if set, opening it would arm it for good")


def test_set_pretimeout_reads_the_value_back(capsys, sysroot, driver):
    make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, "-d", DEVICE, "set-pretimeout", "5") == (
        0, "Pre-timeout has been set to 5 seconds.\n", "")
    assert driver.pretimeout == 5


def test_set_governor_writes_sysfs(capsys, sysroot):
    directory = make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, "-d", DEVICE, "set-governor", "panic") == (
        0, "Pre-timeout governor has been set to panic.\n", "")
    assert (directory / "pretimeout_governor").read_text() == "panic\n"
    (directory / "pretimeout_governor").unlink()
    (directory / "pretimeout_available_governors").unlink()
    code, _, err = run(capsys, "-d", DEVICE, "set-governor", "panic")
    assert code == 1 and err == ("wdt: set-governor: not supported by Software Watchdog "
                                 "(no pretimeout governors in sysfs)\n")


def test_ping_leaves_it_armed(capsys, sysroot, driver):
    make_sysfs(sysroot, SOFTDOG_6_1)
    code, out, _ = run(capsys, "-d", DEVICE, "ping")
    assert code == 0 and driver.writes() == b"\0"
    assert out == ("/dev/null: pinged; it stays armed and resets the machine 60 s from now "
                   "unless fed\n")
    driver.options = watchdog.WDIOF_SETTIMEOUT  # a driver without magic close
    assert "closing it stops it again (Software Watchdog has no magic close" in run(
        capsys, "-d", DEVICE, "ping")[1]


def test_enable_arms_and_disable_stops(capsys, sysroot, driver):
    directory = make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, "-d", DEVICE, "enable")[0] == 0
    assert driver.writes() == b""
    (directory / "state").write_text("active\n")
    assert run(capsys, "-d", DEVICE, "disable")[0] == 1  # fake sysfs still says active
    assert driver.writes() == b"V"
    driver.nowayout = True
    (directory / "nowayout").write_text("1\n")
    code, _, err = run(capsys, "-d", DEVICE, "disable")
    assert code == 1 and err == "wdt: disable: nowayout is set: /dev/null cannot be stopped\n"


def test_magic_close(capsys, sysroot, driver):
    directory = make_sysfs(sysroot, SOFTDOG_6_1)
    assert run(capsys, "-d", DEVICE, "magic-close") == (0, "/dev/null: already inactive\n", "")
    assert driver.calls == [] and driver.writes() == b""  # opening would have started it
    (directory / "state").write_text("active\n")
    (directory / "nowayout").write_text("1\n")
    code, _, err = run(capsys, "-d", DEVICE, "magic-close")
    assert driver.writes() == b"V"
    assert code == 1 and err == "wdt: magic-close: /dev/null is still active: nowayout is set\n"


# ---- the hand parser, and what it does not import --------------------------------------------

@pytest.mark.parametrize("argv,parsed", [
    (["info"], (None, "info", False)),
    (["-d", "/dev/x", "info", "--json"], ("/dev/x", "info", True)),
    (["--device=/dev/x", "list"], ("/dev/x", "list", False)),
    (["-d/dev/x", "bootstatus", "--json"], ("/dev/x", "bootstatus", True)),
    (["timeleft"], (None, "timeleft", False)),
    (["info", "--help"], None), (["--help"], None), (["-d"], None), (["ping"], None),
    (["--json", "info"], None), (["info", "extra"], None), ([], None),
])
def test_parse_query(argv, parsed):
    assert wdt.parse_query(argv) == parsed


def test_queries_do_not_import_typer(tmp_path):
    make_sysfs(tmp_path, SOFTDOG_NEW)
    code = ("import sys; from hamtools import multicall; "
            "rc = multicall.main(['hamtools', 'wdt', '-d', '/dev/null', 'info']); "
            "print('typer' in sys.modules, 'hamtools.applets.wdt_commands' in sys.modules, rc)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HAMTOOLS_SYSFS": str(tmp_path)})
    assert done.stdout.splitlines()[-1] == "False False 0", done.stderr
    assert "Identity:      Software Watchdog [version 0]" in done.stdout


def test_zipapp_info_without_typer(run_zip, tmp_path):
    make_sysfs(tmp_path / "sys", SOFTDOG_NEW)
    done = run_zip("wdt", "-d", DEVICE, "info", env={"HAMTOOLS_SYSFS": str(tmp_path / "sys")})
    assert (done.returncode, done.stdout, done.stderr) == (0, WDCTL_SOFTDOG, "")
    traced = subprocess.run([run_zip.python, "-I", "-X", "importtime", str(ROOT / "bin" / "hamtools"),
                             "wdt", "-d", DEVICE, "info"], capture_output=True, text=True,
                            env={"HAMTOOLS_SYSFS": str(tmp_path / "sys")}, cwd=tmp_path)
    imported = {line.split("|")[-1].strip() for line in traced.stderr.splitlines()
                if line.startswith("import time:")}
    assert "hamtools.applets.wdt" in imported and "typer" not in imported
    assert not {"json", "signal", "hamtools.applets.wdt_commands"} & imported


def test_help_goes_to_typer(run_zip):
    done = run_zip("wdt", "--help")
    assert done.returncode == 0 and "set-pretimeout" in done.stdout and "feed" in done.stdout
    feed = run_zip("wdt", "feed", "--help")
    assert all(opt in feed.stdout for opt in ("-T N[ms]", "-t N[ms]", "-F", "--nowayout"))


# ---- feed, on the fake driver in a process of its own --------------------------------------

@pytest.mark.parametrize("text,minimum,ms", [("5", 1000, 5000), ("500ms", 1, 500),
                                             ("60", 1000, 60000), ("1500ms", 1000, 1500),
                                             ("4294967", 1000, 4294967000)])
def test_parse_ms(text, minimum, ms):
    assert wdt_feed.parse_ms(text, "-T", minimum) == ms


@pytest.mark.parametrize("text,minimum", [("0", 1), ("x", 1), ("5s", 1), ("", 1), ("-1", 1),
                                          ("1.5", 1), ("ms", 1), ("\u0663", 1), ("500ms", 1000),
                                          ("4294968", 1000), ("99999999999999ms", 1)])
def test_parse_ms_rejects(text, minimum):
    with pytest.raises(AppletError) as caught:
        wdt_feed.parse_ms(text, "-T", minimum)
    assert caught.value.code == 2 and "\n" not in str(caught.value)


FAKE_NODE = "/dev/watchdog-fake"  # only named: every open goes to the fake driver


def feeder(writes, *args):
    """`wdt feed ARGS` whose watchdog is tests.wdt_fakes' driver; its writes land in WRITES."""
    return subprocess.Popen([sys.executable, "-m", "tests.wdt_fakes", str(writes), "wdt", "feed",
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_feed_foreground_pings_then_magic_closes_on_signal(tmp_path, stop):
    writes = tmp_path / "device-writes"
    proc = feeder(writes, "-F", "-T", "3", "-t", "50ms", FAKE_NODE)
    wait_for(lambda: writes.exists() and writes.stat().st_size >= 3)  # fed again and again
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out, err) == (0, "", "")
    written = writes.read_bytes()
    assert written.endswith(b"V") and set(written[:-1]) == {0}


def test_feed_nowayout_closes_without_v(tmp_path):
    writes = tmp_path / "device-writes"
    proc = feeder(writes, "-F", "--nowayout", "-t", "50ms", FAKE_NODE)
    wait_for(lambda: writes.exists() and writes.stat().st_size >= 2)
    proc.terminate()
    proc.communicate(timeout=10)
    assert proc.returncode == 0 and set(writes.read_bytes()) == {0}


def test_feed_daemonizes_and_reports_ready(tmp_path):
    writes, pidfile = tmp_path / "device-writes", tmp_path / "feed.pid"
    proc = feeder(writes, "-T", "2", "-t", "50ms", "-p", str(pidfile), FAKE_NODE)
    assert proc.wait(timeout=10) == 0  # returns once the daemon has the device
    pid = int(pidfile.read_text())
    assert pid != proc.pid and os.getsid(pid) not in (os.getsid(0), pid)  # detached, no leader
    wait_for(lambda: writes.stat().st_size >= 2)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not pidfile.exists())
    assert writes.read_bytes().endswith(b"\0V")


def test_feed_daemon_errors_reach_the_caller(hamtools_zip, clean_python, tmp_path):
    for path, code, why in ((tmp_path / "missing", 3, "no such device"),
                            (tmp_path, 1, "not a watchdog device (a directory)")):
        proc = subprocess.Popen([clean_python, "-I", str(hamtools_zip), "wdt", "feed", "-T",
                                 "2", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        _, err = proc.communicate(timeout=10)
        assert (proc.returncode, err) == (code, f"wdt: feed: {path}: {why}\n")
