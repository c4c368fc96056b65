"""The guest half of test_ham_vm.py: ham holding a real i6300esb watchdog inside scripts/vm-test
(Debian's /usr/bin/python3, stdlib only). Everything it sees goes to $VM_SHARE/facts-N.json
as it happens, so a boot cut short by the watchdog still leaves its record.

    /usr/bin/python3 ham_vm_guest.py ZIPAPP

Boot 1: ham (--realtime) feeds the watchdog while a worker heartbeats through systemd-notify;
then the worker hangs in uninterruptible sleep (direct I/O on a suspended device-mapper
device: SIGKILL cannot end it), ham kills it, it does not die, ham stops feeding: the board
resets. Boot 2: ham reports that reset and its culprit; SIGTERM leaves the watchdog armed with
the shutdown timeout; a SIGKILLed ham is taken over by its guardian, which holds the same open
device and feeds it; `hamctl stop` disarms it. Both boots' ham write --metrics-file to the
share.
"""

import json
import os
import subprocess
import sys
import time

ZIPAPP = sys.argv[1]
SHARE = os.environ["VM_SHARE"]
BOOT = os.environ["VM_BOOT"]
RUN = "/run/ham"
HAM = ["/usr/bin/python3", "-I", ZIPAPP]
RECORD = os.path.join(SHARE, "watchdog.json")
METRICS = os.path.join(SHARE, f"ham-{BOOT}.prom")  # in the share: boot 1's outlives the reset
WATCHDOG = ["--watchdog", "/dev/watchdog0", "--watchdog-timeout", "4", "--shutdown-timeout", "30",
            "--watchdog-record", RECORD, "--metrics-file", METRICS]
FACTS: dict = {}

BOARD = """
[service.steady]
command = "/bin/sleep 3600"

[service.stuck]
command = "/bin/sh -c 'for i in $(seq 16); do systemd-notify WATCHDOG=1; sleep 0.5; done; exec dd if=/dev/dm-0 of=/dev/null bs=512 count=1 iflag=direct'"
heartbeat = "1s"
missed_low = 1
missed_high = 2
grace = "1s"
"""


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def note(key: str, value) -> None:
    FACTS[key] = value
    path = os.path.join(SHARE, f"facts-{BOOT}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(FACTS, f, indent=1)
    os.replace(path + ".tmp", path)


def sysfs(name: str) -> str | None:
    try:
        with open(f"/sys/class/watchdog/watchdog0/{name}") as f:
            return f.read().strip()
    except OSError:
        return None


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HAM, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SHIV_ROOT": "/tmp/shiv"})


def start_ham(*extra: str) -> None:
    done = run("ham", "-f", os.path.join(SHARE, f"ham-{BOOT}.log"), "-V", "2", *WATCHDOG, *extra)
    note(f"ham start {len(FACTS)}", {"rc": done.returncode, "err": done.stderr, "uptime": uptime()})


def status() -> dict:
    done = run("hamctl", "status", "--json")
    return json.loads(done.stdout) if done.returncode == 0 else {"rc": done.returncode, "err": done.stderr}


def policy(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[38])  # field 41: sched policy


def oom_score_adj(pid: int) -> int:
    with open(f"/proc/{pid}/oom_score_adj") as f:
        return int(f.read())


def boot_one() -> None:
    subprocess.run(["dmsetup", "create", "hang", "--noudevsync", "--table", "0 8 zero"], check=True)
    subprocess.run(["dmsetup", "suspend", "--noudevsync", "hang"], check=True)
    with open("/tmp/board.toml", "w") as f:
        f.write(BOARD)
    start_ham("--realtime", "--config", "/tmp/board.toml")
    now = status()
    pids = {e["name"]: e["pid"] for e in now.get("entities", [])}
    note("policies", {"ham": policy(now["ham_pid"]), "steady": policy(pids["steady"])})
    note("oom_score_adj", {"ham": oom_score_adj(now["ham_pid"]), "steady": oom_score_adj(pids["steady"])})
    note("watchdog", now.get("watchdog"))
    while True:  # until the watchdog resets the VM
        note("alive", uptime())
        time.sleep(0.5)


def boot_two() -> None:
    start_ham()
    note("status", status())
    with open(METRICS) as metrics:
        note("metrics", metrics.read())
    note("status text", run("hamctl", "status").stdout)
    ham_pid = FACTS["status"].get("ham_pid")
    os.kill(ham_pid, 15)  # SIGTERM, as init at shutdown
    for _ in range(100):
        if not os.path.exists(f"/proc/{ham_pid}"):
            break
        time.sleep(0.1)
    note("after SIGTERM", {"state": sysfs("state"), "timeout": sysfs("timeout")})
    start_ham()
    take_over()
    stopped = run("hamctl", "stop")
    time.sleep(1)
    note("after hamctl stop", {"rc": stopped.returncode, "state": sysfs("state")})


def take_over() -> None:
    """SIGKILL ham while it holds the watchdog: the guardian becomes ham with the very same open
    device (never closed, so the kernel logs no unexpected close) and goes on feeding it."""
    before = status()
    complaints = kernel_complaints()
    os.kill(before["ham_pid"], 9)
    for _ in range(200):
        after = status()
        if after.get("ham_pid") == before["guardian_pid"] and after.get("guardian_pid"):
            break
        time.sleep(0.05)
    time.sleep(6)  # past the 4 s timeout: a new ham that did not feed would reset the VM here
    after = status()
    held = [os.readlink(f"/proc/{after['ham_pid']}/fd/{fd}") for fd in os.listdir(f"/proc/{after['ham_pid']}/fd")]
    note("takeover", {"ham_pid": after.get("ham_pid"), "expected": before["guardian_pid"],
                      "ham_failures": after.get("ham_failures"), "state": sysfs("state"),
                      "holds": [h for h in held if h.startswith("/dev/watchdog")],
                      "feeding": (after.get("watchdog") or {}).get("feeding"),
                      "new complaints": kernel_complaints()[len(complaints):]})


def kernel_complaints() -> list[str]:
    done = subprocess.run(["dmesg"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines()
            if "did not stop" in line or "nexpected close" in line]


if __name__ == "__main__":
    (boot_one if BOOT == "1" else boot_two)()
