"""`wdt` against real kernel watchdog drivers: softdog, i6300esb and iTCO in QEMU (scripts/vm-test).

Four VM runs, two at a time, each a batch of steps done by tests/wdt_vm_guest.py inside the
guest; the tests below assert on what each step recorded:

    softdog                 queries and settings, ping/magic-close/enable/disable, feed (foreground,
                            daemon, --nowayout), a second opener
    i6300esb (2 boots)      the same core, then the feeder is SIGKILLed: the VM must be reset by
                            the watchdog, and on the next boot `wdt bootstatus` says so
    itco                    the core, with timeleft (the only one of the three that has it)
    softdog nowayout=1 (2)  wdt never arms it by accident; once armed nothing stops it: reset

Without QEMU (or apt-get, depmod, Debian's /usr/bin/python3, wdctl) they skip, saying why.
HAMTOOLS_VM_REQUIRED=1 (set by .ci/run) turns a skip into a failure.
"""

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT

RUNS = {  # name: (device, module options, boots, guest scenario)
    "i6300esb": ("i6300esb", "", 2, "kill"),
    "softdog": ("softdog", "", 1, "full"),
    "itco": ("itco", "", 1, "basic"),
    "softdog-nowayout": ("softdog", "nowayout=1", 2, "module-nowayout"),
}
CORE = ["softdog", "i6300esb", "itco"]  # the runs that do the common steps
IDENTITY = {"softdog": "Software Watchdog", "i6300esb": "i6300ESB timer", "itco": "iTCO_wdt"}


def unavailable() -> str | None:
    if os.uname().machine != "x86_64":
        return "the VM tests boot Debian's amd64 kernel"
    tools = ("qemu-system-x86_64", "depmod", "apt-get", "dpkg-deb", "wdctl")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (apt-get install qemu-system-x86 kmod util-linux)"
    if not os.access("/usr/bin/python3", os.X_OK):
        return "needs /usr/bin/python3 (the guest runs the host's interpreter)"
    return None


def skip_or_fail(reason: str):
    if os.environ.get("HAMTOOLS_VM_REQUIRED"):
        pytest.fail(f"VM tests required but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def vms(request, tmp_path_factory):
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    hamtools_zip = request.getfixturevalue("hamtools_zip")  # only once the VM can run
    pool = ThreadPoolExecutor(max_workers=2)  # TCG: one host CPU per VM
    futures = {name: pool.submit(boot_vm, name, hamtools_zip, tmp_path_factory.mktemp(name))
               for name in RUNS}
    yield futures
    pool.shutdown(wait=True)


def boot_vm(name, hamtools_zip, where):
    device, modopts, boots, scenario = RUNS[name]
    share, report = where / "share", where / "report.json"
    done = subprocess.run(
        [str(ROOT / "scripts" / "vm-test"), "--device", device, "--modopts", modopts,
         "--boots", str(boots), "--share", str(share), "--timeout", "300",
         "--report", str(report), "--", "/usr/bin/python3",
         str(ROOT / "tests" / "wdt_vm_guest.py"), scenario, str(hamtools_zip)],
        capture_output=True, text=True, timeout=420)
    if done.returncode == 126:
        return {"setup_error": done.stderr.strip()}
    result = json.loads(report.read_text())
    result["stderr"] = done.stderr
    result["steps"] = {}
    for n in range(1, len(result["boots"]) + 1):
        path = share / f"steps-{n}.json"
        result["steps"][n] = json.loads(path.read_text()) if path.exists() else []
    return result


@pytest.fixture
def vm(vms):
    """vm(name) -> the run's report, waiting for it."""

    def get(name):
        result = vms[name].result()
        if "setup_error" in result:
            skip_or_fail(f"scripts/vm-test could not set up the VM: {result['setup_error']}")
        return result

    return get


def steps(result, boot=1) -> dict:
    return {s["name"]: s for s in result["steps"][boot]}


def parse_wdctl(text: str) -> dict:
    """wdctl's (and wdt info's) text as fields; flag rows as {FLAG: (status, boot status)}."""
    fields, flags = {}, {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("Device", "Identity", "Timeout", "Timeleft", "Pre-timeout",
                           "Pre-timeout governor", "Available pre-timeout governors"):
            fields[key] = value.strip()
        elif re.fullmatch(r"[A-Z0-9]+ .* [01] +[01]", line):
            cells = line.split()
            flags[cells[0]] = (cells[-2], cells[-1])
    fields["flags"] = flags
    return fields


def without_timeleft(text: str) -> str:
    # Seconds pass between the two runs; everything else must match to the character.
    return re.sub(r"^Timeleft: .*\n", "", text, flags=re.M)


# ---- every driver -------------------------------------------------------------------------

@pytest.mark.parametrize("name", CORE)
def test_boot_ran_the_steps(vm, name):
    result = vm(name)
    first = steps(result)
    assert first["boot"]["device"] == RUNS[name][0], result["stderr"]
    assert "feeder_terminated" in first, result["stderr"]


@pytest.mark.parametrize("name", CORE)
def test_info_agrees_with_wdctl(vm, name):
    s = steps(vm(name))
    for ours, theirs in (("info", "wdctl"), ("info_after_set", "wdctl_after_set")):
        assert s[ours]["rc"] == 0 and s[theirs]["rc"] == 0, s[ours]["err"]
        assert s[ours]["err"] == ""
        info, wdctl = parse_wdctl(s[ours]["out"]), parse_wdctl(s[theirs]["out"])
        assert info["Identity"] == wdctl["Identity"] == f"{IDENTITY[name]} [version 0]"
        assert info["flags"] == wdctl["flags"] and "SETTIMEOUT" in info["flags"]
        assert ("Timeleft" in info) == ("Timeleft" in wdctl) == (name == "itco")
        if name == "itco":
            left = int(info["Timeleft"].split()[0]), int(wdctl["Timeleft"].split()[0])
            assert abs(left[0] - left[1]) <= 2
        assert without_timeleft(s[ours]["out"]) == without_timeleft(s[theirs]["out"])
        assert s[ours]["state"] == "inactive"  # opened and magic-closed, not left armed


@pytest.mark.parametrize("name", CORE)
def test_info_json_and_list(vm, name):
    s = steps(vm(name))
    data = json.loads(s["info_json"]["out"])
    assert data["identity"] == IDENTITY[name] and data["state"] == "inactive"
    assert data["opened"] is True  # 6.1's sysfs has no options: the stopped device is asked
    assert {f["flag"] for f in data["flags"]} >= {"SETTIMEOUT", "MAGICCLOSE", "KEEPALIVEPING"}
    listing = s["list"]["out"].splitlines()
    assert listing[0].split() == ["DEVICE", "IDENTITY", "STATE", "TIMEOUT", "TIMELEFT", "NOWAYOUT"]
    assert listing[1].startswith("/dev/watchdog0") and IDENTITY[name] in listing[1]


@pytest.mark.parametrize("name", CORE)
def test_settings_take_effect(vm, name):
    s = steps(vm(name))
    assert s["set_timeout"]["out"] == "Timeout has been set to 17 seconds.\n"
    assert s["set_timeout"]["timeout"] == "17"
    assert s["set_pretimeout"]["out"] == "Pre-timeout has been set to 5 seconds.\n"
    assert s["set_pretimeout"]["pretimeout"] == "5"
    assert s["set_governor"]["governor"] == "panic"
    wdctl = parse_wdctl(s["wdctl_after_set"]["out"])
    assert (wdctl["Timeout"], wdctl["Pre-timeout"], wdctl["Pre-timeout governor"]) == (
        "17 seconds", "5 seconds", "panic")
    assert s["bad_governor"]["rc"] == 1
    assert s["bad_governor"]["err"] == ("wdt: set-governor nosuch: no such governor "
                                        "(available: panic noop)\n")
    assert s["bad_pretimeout"]["rc"] == 1
    assert s["bad_pretimeout"]["err"] == (f"wdt: set-pretimeout 17: invalid value for "
                                          f"{IDENTITY[name]}: it must be less than the timeout "
                                          "(17 s)\n")
    assert s["set_pretimeout_off"]["pretimeout"] == "0"
    # No setting left the watchdog running.
    assert {s[k]["state"] for k in ("set_timeout", "set_pretimeout", "set_pretimeout_off")} == {
        "inactive"}


@pytest.mark.parametrize("name", CORE)
def test_timeleft_where_the_driver_has_it(vm, name):
    s = steps(vm(name))
    if name == "itco":
        assert s["timeleft"]["rc"] == 0 and 0 < int(s["timeleft"]["out"]) <= 30
        assert s["timeleft_armed"]["rc"] == 0 and int(s["timeleft_armed"]["out"]) <= 17
    else:
        for key in ("timeleft", "timeleft_armed"):
            assert (s[key]["rc"], s[key]["err"]) == (
                1, f"wdt: timeleft: not supported by {IDENTITY[name]}\n")


@pytest.mark.parametrize("name", CORE)
def test_ping_arms_and_magic_close_disarms(vm, name):
    s = steps(vm(name))
    assert s["ping"]["rc"] == 0 and s["ping"]["state"] == "active"
    assert "it stays armed and resets the machine 17 s from now" in s["ping"]["out"]
    # info on an armed watchdog reads sysfs and leaves it alone (wdctl would stop it).
    assert s["info_armed"]["rc"] == 0 and s["info_armed"]["state"] == "active"
    assert "was not opened: it is active" in s["info_armed"]["err"]
    assert s["magic_close"]["out"] == "/dev/watchdog0: stopped\n"
    assert s["magic_close"]["state"] == "inactive"
    assert s["magic_close_again"]["out"] == "/dev/watchdog0: already inactive\n"
    assert s["enable"]["rc"] == 0 and s["enable"]["state"] == "active"
    assert s["disable"]["rc"] == 0 and s["disable"]["state"] == "inactive"


@pytest.mark.parametrize("name", CORE)
def test_feed_keeps_it_alive_and_a_second_opener_gets_ebusy(vm, name):
    result = vm(name)
    s = steps(result)
    assert s["feeder_started"]["active"] and s["feeder_started"]["timeout"] == "3"
    assert s["second_opener"]["rc"] == 1
    assert s["second_opener"]["err"] == ("wdt: ping: /dev/watchdog0: device busy: another "
                                         "process holds it (a watchdog daemon, systemd, "
                                         "wdt feed)\n")
    assert s["info_busy"]["rc"] == 0 and s["info_busy"]["state"] == "active"
    assert s["alive_while_fed"]["fed_for"] >= 9  # three timeouts
    assert s["feeder_terminated"]["rc"] == 0 and s["feeder_terminated"]["inactive"]
    # The same boot went on after the feeder (i6300esb is reset later, on purpose).
    assert result["boots"][0]["rc"] == 0 if RUNS[name][3] != "kill" else "feeder_killed" in s


# ---- softdog: the daemon, --nowayout ------------------------------------------------------

def test_feed_daemonizes(vm):
    s = steps(vm("softdog"))
    assert s["feed_daemon"]["rc"] == 0 and s["feed_daemon"]["out"] == ""
    assert s["feed_daemon"]["state"] == "active"
    assert s["daemon_alive"]["active"]
    assert s["daemon_terminated"]["inactive"] and s["daemon_terminated"]["pidfile_removed"]


def test_feed_nowayout_leaves_it_armed(vm):
    s = steps(vm("softdog"))
    assert s["nowayout_feeder_terminated"]["rc"] == 0
    assert s["nowayout_feeder_terminated"]["state"] == "active"
    assert s["magic_close_after_nowayout"]["state"] == "inactive"


# ---- resets -----------------------------------------------------------------------------------

def test_sigkill_of_the_feeder_resets_and_bootstatus_says_so(vm):
    result = vm("i6300esb")
    first = result["steps"][1]
    assert [b["boot"] for b in result["boots"]] == [1, 2], result["stderr"]
    assert first[-1]["name"] == "feeder_killed"  # "still_alive_after_kill" never came
    assert result["boots"][0]["rc"] is None
    assert result["boots"][0]["reset_by_watchdog"] == "QEMU WATCHDOG event, action=reset"
    assert "vm-test: boot 1 was reset by the watchdog" in result["stderr"]
    after = steps(result, boot=2)
    assert after["bootstatus"]["rc"] == 0
    assert after["bootstatus"]["out"] == ("/dev/watchdog0: the last reset came from the watchdog "
                                          "(CARDRESET: Card previously reset the CPU)\n")
    assert json.loads(after["bootstatus_json"]["out"])["watchdog_reset"] is True
    info, wdctl = parse_wdctl(after["info"]["out"]), parse_wdctl(after["wdctl"]["out"])
    assert info["flags"]["CARDRESET"][1] == wdctl["flags"]["CARDRESET"][1] == "1"
    assert info["flags"] == wdctl["flags"]
    assert result["exit"] == 0


def test_module_nowayout_is_never_armed_by_accident_and_cannot_be_stopped(vm):
    result = vm("softdog-nowayout")
    s = steps(result)
    assert s["info"]["rc"] == 0 and s["info"]["state"] == "inactive"
    assert "was not opened: nowayout is set" in s["info"]["err"]
    assert s["set_timeout_refused"]["rc"] == 1 and s["set_timeout_refused"]["state"] == "inactive"
    assert s["magic_close_inactive"]["out"] == "/dev/watchdog0: already inactive\n"
    assert s["feeder_terminated"]["rc"] == 0 and s["feeder_terminated"]["state"] == "active"
    assert s["magic_close_refused"]["rc"] == 1
    assert s["magic_close_refused"]["err"] == ("wdt: magic-close: /dev/watchdog0 is still "
                                               "active: nowayout is set\n")
    assert "still_alive" not in s
    assert result["boots"][0]["reset_by_watchdog"] == "softdog: Initiating system reboot"
    assert len(result["boots"]) == 2
