"""`wdt` against real kernel watchdog drivers: softdog, i6300esb and iTCO in QEMU (scripts/vm-test).

Four VM runs, two at a time, each a batch of steps done by tests/wdt_vm_guest.py inside the
guest; the tests below assert on what each step recorded:

    softdog, i6300esb, itco   queries and settings, ping/magic-close/enable/disable, feed, a
      (2 boots each)          second opener, wdctl and info on the held device; then the feeder
                              is SIGKILLed: the watchdog must reset the VM when its countdown
                              ends (QMP's stamp against the guest's kill marker), and on the
                              next boot `wdt bootstatus` says what the driver knows of it
    softdog also              feed as a daemon, feed --nowayout
    softdog nowayout=1 (2)    wdt never arms it by accident; once armed nothing stops it: reset

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

RUNS = {  # name: (device, module options, boots, guest scenario); the longest runs first
    "softdog": ("softdog", "", 2, "full"),
    "itco": ("itco", "", 2, "basic"),
    "i6300esb": ("i6300esb", "", 2, "basic"),
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
    marker = share / "feeder-killed"  # written by the guest right after the SIGKILL
    result["killed_at"] = marker.stat().st_mtime if marker.exists() else None
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
    assert "feeder_killed" in s  # the same boot went on after the feeder, to be reset later


@pytest.mark.parametrize("name", CORE)
def test_info_on_a_held_device_agrees_with_wdctl(vm, name):
    # Neither can open the device the feeder holds (EBUSY): both show what sysfs has.
    s = steps(vm(name))
    held, ours = s["wdctl_busy"], s["info_busy"]
    assert held["rc"] == 0 and ours["rc"] == 0 and ours["state"] == "active"
    wdctl, info = parse_wdctl(held["out"]), parse_wdctl(ours["out"])
    assert set(info) == set(wdctl)  # the same lines...
    for key in ("Device", "Timeout", "Pre-timeout", "Pre-timeout governor",
                "Available pre-timeout governors"):
        assert info.get(key) == wdctl.get(key), key  # ...saying the same
    assert info["Timeout"] == "3 seconds"  # the feeder's -T
    # 6.1's sysfs has no options: no flag table from either, and no firmware version, which
    # wdctl then prints as its default "[version 0]" and wdt leaves out (and says so).
    assert info["flags"] == wdctl["flags"] == {}
    assert (wdctl["Identity"], info["Identity"]) == (f"{IDENTITY[name]} [version 0]",
                                                     IDENTITY[name])
    assert "flags, firmware version unknown" in ours["err"]
    if name == "itco":  # the only one with timeleft; a moment passes between the two runs
        left = int(info["Timeleft"].split()[0]), int(wdctl["Timeleft"].split()[0])
        assert abs(left[0] - left[1]) <= 2


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

# What each driver reports on the boot after it reset the machine, and why.
BOOTSTATUS_AFTER_RESET = {
    # i6300esb.c reads the chip's timeout bit at probe and reports WDIOF_CARDRESET.
    "i6300esb": (0, "/dev/watchdog0: the last reset came from the watchdog "
                    "(CARDRESET: Card previously reset the CPU)\n"),
    # A software timer: nothing that survives the reset remembers it.
    "softdog": (1, "/dev/watchdog0: the last reset did not come from the watchdog\n"),
    # QEMU does set SECOND_TO_STS, but iTCO_wdt.c clears it at probe and reports bootstatus 0
    # whatever it held, so no driver-level answer exists (on real hardware either).
    "itco": (1, "/dev/watchdog0: the last reset did not come from the watchdog\n"),
}


def countdown(name: str, timeout: int) -> float:
    """Seconds from the last ping to the reset, for this driver's timeout."""
    if name == "itco":
        # TCO v2 (ICH9) counts down twice before it resets (QEMU's hw/acpi/tco.c resets on
        # the second expiry; iTCO_wdt halves the count for TCO v1 only), in 0.6 s ticks.
        return 2 * (timeout * 10 // 6) * 0.6
    return timeout


@pytest.mark.parametrize("name", CORE)
def test_sigkill_of_the_feeder_resets_the_vm(vm, name):
    result = vm(name)
    first = result["steps"][1]
    assert [b["boot"] for b in result["boots"]] == [1, 2], result["stderr"]
    assert first[-1]["name"] == "feeder_killed"  # "still_alive_after_kill" never came
    assert result["boots"][0]["rc"] is None
    assert "vm-test: boot 1 was reset by the watchdog" in result["stderr"]
    if name == "softdog":  # the guest kernel reboots itself: QEMU sees only the reset
        assert result["boots"][0]["reset_by_watchdog"] == "softdog: Initiating system reboot"
    else:
        assert result["boots"][0]["reset_by_watchdog"] == "QEMU WATCHDOG event, action=reset"
    assert result["exit"] == 0


@pytest.mark.parametrize("name", CORE)
def test_the_reset_comes_one_countdown_after_the_kill(vm, name):
    # The dead feeder's descriptor is released with one last ping, so the countdown starts
    # at the kill: the reset must come no earlier than that, and not much later either.
    result = vm(name)
    timeout = int(steps(result)["feeder_killed"]["timeout"])
    assert timeout == 3  # the feeder's -T took effect
    killed = result["killed_at"]
    resets = [e["wall"] for e in result["qmp_events"] if e["event"] == "RESET"
              and e["wall"] > killed]
    assert resets, result["qmp_events"]
    delay, expected = resets[0] - killed, countdown(name, timeout)
    # 0.2 s: the marker is written just after the kill; mtimes have a coarse clock.
    assert expected - 0.2 <= delay <= expected + 3, (delay, expected)


@pytest.mark.parametrize("name", CORE)
def test_bootstatus_after_the_reset(vm, name):
    after = steps(vm(name), boot=2)
    code, text = BOOTSTATUS_AFTER_RESET[name]
    assert (after["bootstatus"]["rc"], after["bootstatus"]["out"]) == (code, text)
    data = json.loads(after["bootstatus_json"]["out"])
    assert data["watchdog_reset"] is (code == 0)
    info, wdctl = parse_wdctl(after["info"]["out"]), parse_wdctl(after["wdctl"]["out"])
    assert info["flags"] == wdctl["flags"]  # the same BOOT-STATUS column as wdctl
    if name == "i6300esb":
        assert info["flags"]["CARDRESET"][1] == "1"
    else:
        assert all(boot == "0" for _, boot in info["flags"].values())


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
