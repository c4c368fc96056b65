"""The guest half of test_init_vm.py: ham under a real init inside scripts/vm-test (Debian's
/usr/bin/python3, stdlib only), booted with that init as PID 1. What it sees goes to
$VM_SHARE/facts.json as it happens; ham logs to $VM_SHARE/ham.log, and every stop of ham
that the init sees appends the softdog's state to $VM_SHARE/watchdog-after-stop (the unit's
ExecStopPost=, OpenRC's stop), so the shutdown that follows this script is recorded too.

    /usr/bin/python3 init_vm_guest.py systemd|busybox|openrc|openrc-prepare ZIPAPP REPO
"""

import json
import os
import subprocess
import sys
import time

SHARE = "/run/vm-share"  # the run's share, as scripts/vm-init.sh mounts it
HAM_LOG = os.path.join(SHARE, "ham.log")
BOARD = os.path.join(SHARE, "board.toml")
AFTER_STOP = os.path.join(SHARE, "watchdog-after-stop")
# ham holds the softdog, so each stop shows which stop it was: ham_stop's magic close leaves
# it inactive, SIGTERM (the shutdown stop) leaves it active with the shutdown timeout.
HAM_ARGS = f"-V 2 -f {HAM_LOG} --config {BOARD} --watchdog /dev/watchdog0 --shutdown-timeout 30"
RECORD_WATCHDOG = (f"echo $(cat /sys/class/watchdog/watchdog0/state) "
                   f"$(cat /sys/class/watchdog/watchdog0/timeout) >> {AFTER_STOP}")
FACTS: dict = {}
ZIPAPP = REPO = ""  # from the command line


def note(key: str, value) -> None:
    FACTS[key] = value
    path = os.path.join(SHARE, "facts.json")
    with open(path + ".tmp", "w") as f:
        json.dump(FACTS, f, indent=1)
    os.replace(path + ".tmp", path)


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def sh(*argv: str) -> dict:
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}


def hamctl(*args: str) -> dict:
    return sh("/usr/bin/python3", "-I", ZIPAPP, "hamctl", *args)


def status() -> dict:
    """What `hamctl status --json` prints, asked in this process (the repository's libham: a
    python start costs about a second under TCG); {} without ham."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from hamtools.ham import ham_status

    try:
        return ham_status()
    except OSError:
        return {}


def pids() -> dict:
    return {e["name"]: e["pid"] for e in status().get("entities", []) if e["type"] != "global"}


def alive(pid) -> bool:
    return pid is not None and os.path.exists(f"/proc/{pid}")


def wait_for(predicate, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return predicate()


def write_board(*services: str, broken: bool = False, share: str = SHARE) -> None:
    """ham's services, each started after the one before; each records its stop in
    $SHARE/stops with whether ham (whose pid its lock file holds) was still there (once: ham
    signals the group and its leader, so the leader may see the stop signal twice)."""
    with open(os.path.join(share, "service.sh"), "w") as f:
        f.write(f"trap 'trap \"\" TERM; echo $1 $(kill -0 $(cat /run/ham/ham.lock) && echo by ham || echo after ham) "
                f"2>/dev/null >> {SHARE}/stops; exit 0' TERM\nwhile :; do sleep 1; done\n")
    with open(os.path.join(share, "board.toml"), "w") as f:
        f.writelines(f'[service.{name}]\ncommand = "/bin/sh {SHARE}/service.sh {name}"\n'
                     + (f'after = ["{before}"]\n' if before else "")
                     for before, name in zip((None, *services), services))
        if broken:
            f.write("[service.bad\n")


def watchdog_records() -> list[str]:
    try:
        with open(AFTER_STOP) as f:
            return f.read().split("\n")[:-1]
    except FileNotFoundError:
        return []


# ---- systemd: scripts/init/ham.service -----------------------------------------------------

def systemd() -> None:
    unit = read(os.path.join(REPO, "scripts/init/ham.service"))
    os.makedirs("/run/systemd/system/ham.service.d", exist_ok=True)
    with open("/run/systemd/system/ham.service", "w") as f:
        f.write(unit.replace("/usr/bin/hamtools", ZIPAPP))
    # What /etc/default/ham would say (the guest's /etc is read-only), a short watchdog to
    # see it fire, and the softdog's state after each stop.
    with open("/run/systemd/system/ham.service.d/test.conf", "w") as f:
        f.write(f'[Service]\nEnvironment="HAM_ARGS={HAM_ARGS}"\nWatchdogSec=5s\n'
                f"ExecStopPost=/bin/sh -c '{RECORD_WATCHDOG}'\n")
    write_board("web")
    sh("systemctl", "daemon-reload")
    note("start", sh("systemctl", "start", "ham"))
    note("answers at once", hamctl("status")["rc"])  # Type=notify: started means ready
    note("show", show())
    note("status", status())
    web = pids().get("web")
    note("web cgroup", read(f"/proc/{web}/cgroup").strip() if alive(web) else None)
    note("takeover", takeover(int(show()["MainPID"])))

    write_board("web", "extra")
    note("reload", sh("systemctl", "reload", "ham"))
    note("after reload", pids())
    write_board("web", "extra", broken=True)
    note("bad reload", sh("systemctl", "reload", "ham"))
    note("after bad reload", pids())
    write_board("web", "extra")

    note("restart", sh("systemctl", "restart", "ham"))
    note("after restart", {"show": show(), "pids": pids(), "watchdog": watchdog_records()})

    hung = int(show()["MainPID"])
    os.kill(hung, 19)  # SIGSTOP: ham's loop stops, so do its WATCHDOG=1 pings

    def restarted():
        now = show()
        return now if now["MainPID"] not in ("0", str(hung)) and now["ActiveState"] == "active" else None

    note("watchdog restart", wait_for(restarted, 30))
    note("after watchdog restart", {"pids": pids(), "hung alive": alive(hung),
                                    "journal": sh("journalctl", "-u", "ham", "-o", "cat")["out"]})

    note("stop", sh("systemctl", "stop", "ham"))
    note("after stop", {"show": show(), "web alive": alive(web), "watchdog": watchdog_records()})
    note("start again", sh("systemctl", "start", "ham"))
    note("after start again", {"pids": pids(), "show": show()})
    # The poweroff that follows stops ham as a shutdown: the ExecStopPost record tells.


def takeover(ham: int) -> dict:
    """SIGKILL the main process, ham: under systemd, systemd is ham's guardian (the unit runs
    it with --no-guardian). It restarts ham; the new ham resumes from the saved state with the
    same entities and says READY=1 with MAINPID= of itself."""
    from hamtools.ham import ham_status

    before = ham_status()
    os.kill(ham, 9)
    heir = wait_for(lambda: show()["MainPID"] not in (str(ham), "0") and show()["ActiveState"] == "active"
                    and show()["MainPID"], 30)

    def answered():
        try:
            now = ham_status()
        except OSError:
            return None
        return now if now["ham_pid"] != before["ham_pid"] else None

    after = wait_for(answered, 15) or {"entities": [], "ham_pid": None}
    return {"heir": int(heir) if heir else None, "ham now": after["ham_pid"], "show": show(),
            "same entities": [(e["name"], e["pid"]) for e in after["entities"]]
            == [(e["name"], e["pid"]) for e in before["entities"]],
            "guardian": before["guardian_pid"]}


def show() -> dict:
    out = sh("systemctl", "show", "ham", "-p", "Type,NotifyAccess,KillMode,WatchdogUSec,MainPID,"
             "ActiveState,SubState,StatusText,NRestarts,Result")["out"]
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# ---- busybox init: scripts/init/inittab's lines (test_init_vm writes them into the inittab,
# and the board: ham starts at boot) -------------------------------------------------------------

def busybox() -> None:
    first = wait_for(status, 30)
    ham = first.get("ham_pid")
    note("booted", {"pid 1": read("/proc/1/comm").strip(), "ham parent": parent(ham),
                    "pids": pids()})
    web = pids().get("web")
    os.kill(ham, 9)
    respawned = wait_for(lambda: status().get("ham_pid") not in (None, ham) and status(), 30)
    note("after SIGKILL", {"ham": respawned.get("ham_pid"), "parent": parent(respawned.get("ham_pid")),
                           "pids": pids(), "web alive": alive(web)})
    os.kill(web, 9)
    note("web restarted", wait_for(lambda: pids().get("web") not in (None, web) and alive(pids()["web"]), 30))
    # The poweroff that follows runs the ::shutdown: lines: ham's SIGTERM, then the record.


def parent(pid) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, TypeError):
        return None


# ---- OpenRC on busybox init (as Alpine boots): scripts/init/ham.openrc in the default runlevel

def openrc_prepare() -> None:
    """A ::sysinit: line before OpenRC's: the guest's /etc is read-only, so the runlevels are a
    tmpfs holding only ham, and the service lives in /usr/local/etc/init.d (also searched)."""
    for where in ("/etc/runlevels", "/usr/local/etc"):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", where], check=True)
    for level in ("sysinit", "boot", "default", "shutdown", "nonetwork"):
        os.mkdir(f"/etc/runlevels/{level}")
    os.makedirs("/usr/local/etc/init.d")
    os.makedirs("/usr/local/etc/conf.d")
    with open("/usr/local/etc/init.d/ham", "w") as f:
        f.write(read(os.path.join(REPO, "scripts/init/ham.openrc")))
    os.chmod("/usr/local/etc/init.d/ham", 0o755)
    with open("/usr/local/etc/conf.d/ham", "w") as f:
        f.write(f'HAMTOOLS={ZIPAPP}\nHAM_ARGS="{HAM_ARGS}"\n')
    os.symlink("/usr/local/etc/init.d/ham", "/etc/runlevels/default/ham")
    write_board("web")


def openrc() -> None:
    note("booted", {"rc-status": sh("rc-status", "default"), "pids": pids(),
                    "pid 1": read("/proc/1/comm").strip()})
    web = pids().get("web")
    note("status", sh("rc-service", "ham", "status"))
    write_board("web", "extra")
    note("reload", sh("rc-service", "ham", "reload"))
    note("after reload", pids())
    note("restart", sh("rc-service", "ham", "restart"))
    note("after restart", {"pids": pids(), "watchdog": sysfs_watchdog()})
    note("stop", sh("rc-service", "ham", "stop"))
    note("after stop", {"hamctl": hamctl("status")["rc"], "web alive": alive(web),
                        "watchdog": sysfs_watchdog(), "status": sh("rc-service", "ham", "status")})
    note("start", sh("rc-service", "ham", "start"))
    note("after start", {"pids": pids(), "status": sh("rc-service", "ham", "status")})
    # The poweroff that follows runs `openrc shutdown` (ham's SIGTERM), then the record.


def sysfs_watchdog() -> str:
    return sh("/bin/sh", "-c", RECORD_WATCHDOG.split(" >> ")[0])["out"].strip()


if __name__ == "__main__":
    mode, ZIPAPP, REPO = sys.argv[1:4]
    {"systemd": systemd, "busybox": busybox, "openrc-prepare": openrc_prepare, "openrc": openrc}[mode]()
