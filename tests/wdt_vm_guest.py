"""The guest half of test_wdt_vm.py: runs inside scripts/vm-test (Debian's /usr/bin/python3,
stdlib only), drives `bin/hamtools wdt` and util-linux `wdctl` against the real driver and
records every step, so the host side can assert with pytest's messages.

    /usr/bin/python3 wdt_vm_guest.py SCENARIO ZIPAPP

Steps go to $VM_SHARE/steps-$VM_BOOT.json after each one, so a boot cut short by the
watchdog still leaves what it did. Each step: name, argv, rc, out, err, state (sysfs, after
the step), uptime (before it).
"""

import json
import os
import signal
import subprocess
import sys
import time

SCENARIO, ZIPAPP = sys.argv[1], sys.argv[2]
WDT = ["/usr/bin/python3", "-I", ZIPAPP, "wdt"]
DEVICE = "/dev/watchdog0"
SYSFS = "/sys/class/watchdog/watchdog0"
STEPS = []
KILL_TIMEOUT = 3  # the feeder's -T when it is SIGKILLed (test_wdt_vm.py checks the delay)


def attribute(name):
    try:
        with open(os.path.join(SYSFS, name)) as f:
            return f.read().strip()
    except OSError:
        return None


def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def save():
    path = os.path.join(os.environ["VM_SHARE"], f"steps-{os.environ['VM_BOOT']}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(STEPS, f, indent=1)
    os.replace(path + ".tmp", path)


def note(name, **facts):
    STEPS.append({"name": name, "uptime": uptime(), "state": attribute("state"), **facts})
    save()


def step(name, argv):
    started = uptime()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    STEPS.append({"name": name, "argv": argv, "rc": done.returncode, "out": done.stdout,
                  "err": done.stderr, "state": attribute("state"), "uptime": started,
                  "timeout": attribute("timeout"), "pretimeout": attribute("pretimeout"),
                  "governor": attribute("pretimeout_governor")})
    save()


def wait_attribute(name, want, seconds=20):
    deadline = time.monotonic() + seconds
    while attribute(name) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return attribute(name) == want


def feeder(*args):
    return subprocess.Popen([*WDT, "feed", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def queries_and_settings():
    """info vs wdctl on the stopped device, then every setting and how it shows."""
    step("wdctl", ["wdctl"])
    step("info", [*WDT, "info"])
    step("info_json", [*WDT, "info", "--json"])
    step("list", [*WDT, "list"])
    step("bootstatus", [*WDT, "bootstatus"])
    step("timeleft", [*WDT, "timeleft"])
    step("set_timeout", [*WDT, "set-timeout", "17"])
    step("set_pretimeout", [*WDT, "set-pretimeout", "5"])
    step("set_governor", [*WDT, "set-governor", "panic"])
    step("bad_governor", [*WDT, "set-governor", "nosuch"])
    step("bad_pretimeout", [*WDT, "set-pretimeout", "17"])
    step("info_after_set", [*WDT, "info"])
    step("wdctl_after_set", ["wdctl"])
    step("set_pretimeout_off", [*WDT, "set-pretimeout", "0"])


def arm_and_stop():
    step("ping", [*WDT, "ping"])
    step("info_armed", [*WDT, "info"])  # must not stop it
    step("timeleft_armed", [*WDT, "timeleft"])
    step("magic_close", [*WDT, "magic-close"])
    step("magic_close_again", [*WDT, "magic-close"])
    step("enable", [*WDT, "enable"])
    step("disable", [*WDT, "disable"])


def feeding(timeout=3, alive_for=9):
    """A foreground feeder keeps it alive well past the timeout; a second opener is refused."""
    proc = feeder("-F", "-T", str(timeout), DEVICE)
    # the feeder opens the device (active) and then sets its timeout: wait for both
    active = wait_attribute("state", "active")
    wait_attribute("timeout", str(timeout), 5)
    note("feeder_started", active=active, timeout=attribute("timeout"))
    began = time.monotonic()
    step("second_opener", [*WDT, "ping"])
    step("wdctl_busy", ["wdctl"])
    step("info_busy", [*WDT, "info"])
    time.sleep(max(0, alive_for - (time.monotonic() - began)))
    note("alive_while_fed", fed_for=round(time.monotonic() - began, 1))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    note("feeder_terminated", rc=proc.returncode, err=err, inactive=wait_attribute("state", "inactive", 5))


def daemon_feeding(timeout=3):
    step("feed_daemon", [*WDT, "feed", "-T", str(timeout), "-p", "/run/feed.pid", DEVICE])
    with open("/run/feed.pid") as f:
        pid = int(f.read())
    time.sleep(2 * timeout)
    note("daemon_alive", active=attribute("state") == "active")
    os.kill(pid, signal.SIGTERM)
    note("daemon_terminated", inactive=wait_attribute("state", "inactive", 10),
         pidfile_removed=not os.path.exists("/run/feed.pid") or wait_gone("/run/feed.pid"))


def wait_gone(path, seconds=5):
    deadline = time.monotonic() + seconds
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(path)


def nowayout_flag():
    """feed --nowayout: SIGTERM closes without 'V', so it stays armed; magic-close stops it."""
    proc = feeder("-F", "--nowayout", "-T", "30", DEVICE)
    wait_attribute("state", "active")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    note("nowayout_feeder_terminated", rc=proc.returncode)
    step("magic_close_after_nowayout", [*WDT, "magic-close"])


def starve_by_sigkill(timeout):
    """Kill the feeder with SIGKILL (no magic close): the watchdog must reset the VM.

    The kernel's release of the dead feeder's descriptor pings once ("watchdog did not
    stop!"), so the countdown starts at the kill. The file feeder-killed in the share is
    written right after it: its mtime is the host's clock, the one QEMU stamps QMP events
    with, so the host can tell how long after the kill the reset came.
    """
    proc = feeder("-F", "-T", str(timeout), DEVICE)
    # the feeder opens (arming it with the timeout the step before left) and then sets its
    # own: a kill between the two would leave that countdown running, so wait for both
    wait_attribute("state", "active")
    wait_attribute("timeout", str(timeout), 5)
    proc.kill()
    with open(os.path.join(os.environ["VM_SHARE"], "feeder-killed"), "w") as f:
        f.write(f"{uptime()}\n")
    proc.wait()
    note("feeder_killed", timeout=attribute("timeout"))
    time.sleep(120)
    note("still_alive_after_kill")  # never reached if the watchdog did its job


def after_reset():
    step("bootstatus", [*WDT, "bootstatus"])
    step("bootstatus_json", [*WDT, "bootstatus", "--json"])
    step("wdctl", ["wdctl"])
    step("info", [*WDT, "info"])


def module_nowayout():
    """The driver loaded with nowayout=1: wdt never arms it by accident, and nothing stops it."""
    step("info", [*WDT, "info"])
    step("set_timeout_refused", [*WDT, "set-timeout", "5"])
    step("magic_close_inactive", [*WDT, "magic-close"])
    proc = feeder("-F", "-T", "4", DEVICE)
    wait_attribute("state", "active")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    note("feeder_terminated", rc=proc.returncode)
    step("magic_close_refused", [*WDT, "magic-close"])
    time.sleep(120)
    note("still_alive")  # never reached: nowayout keeps it armed


def main():
    boot = int(os.environ["VM_BOOT"])
    note("boot", kernel=os.uname().release, device=os.environ.get("VM_DEVICE"))
    if SCENARIO == "module-nowayout":
        if boot == 1:
            module_nowayout()
        return
    if boot > 1:
        after_reset()
        return
    queries_and_settings()
    arm_and_stop()
    feeding()
    if SCENARIO == "full":
        daemon_feeding()
        nowayout_flag()
    starve_by_sigkill(timeout=KILL_TIMEOUT)


if __name__ == "__main__":
    main()
