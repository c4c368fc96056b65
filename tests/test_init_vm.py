"""ham under real inits, each booted as PID 1 in the VM harness (scripts/vm-test): systemd with
scripts/init/ham.service, busybox init with scripts/init/inittab's lines, and OpenRC on busybox
init (as Alpine boots) with scripts/init/ham.openrc in its default runlevel. ham holds the
softdog in every run, so the watchdog's state after each stop tells an operator's stop
(ham_stop, the magic close: inactive) from the shutdown stop (SIGTERM: armed with the shutdown
timeout, 30 s here). The guest half is tests/init_vm_guest.py; three boots, two at a time.
Without QEMU they skip, saying why (HAMTOOLS_VM_REQUIRED=1, set by .ci/run, fails instead)."""

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT
from tests.init_vm_guest import HAM_ARGS, RECORD_WATCHDOG, write_board
from tests.test_wdt_vm import skip_or_fail, unavailable

INITTAB = ROOT / "scripts" / "init" / "inittab"
MODES = ("systemd", "openrc", "busybox")  # the longest first
SHUTDOWN_STOP, OPERATOR_STOP = "active 30", "inactive 60"  # softdog's state and timeout after


def busybox_inittab(zipapp: str) -> str:
    """The snippet's busybox lines as shipped, but for the zipapp's path and the test's ham
    arguments, then the record of the watchdog's state after the shutdown line stopped ham."""
    lines = [line for line in INITTAB.read_text().splitlines() if line.startswith("::")]
    assert [line.split(":")[2] for line in lines] == ["respawn", "shutdown"]
    respawn = lines[0].replace("/usr/bin/hamtools", zipapp) + " " + HAM_ARGS
    return "\n".join([respawn, lines[1], f"::shutdown:/bin/sh -c '{RECORD_WATCHDOG}'"]) + "\n"


def openrc_inittab(guest: list[str]) -> str:
    """Alpine's lines for OpenRC on busybox init, after one that puts ham into the runlevel."""
    prepare = " ".join(guest).replace(" openrc ", " openrc-prepare ")
    return (f"::sysinit:{prepare}\n::sysinit:/sbin/openrc sysinit\n::sysinit:/sbin/openrc boot\n"
            "::wait:/sbin/openrc default\n::shutdown:/sbin/openrc shutdown\n"
            f"::shutdown:/bin/sh -c '{RECORD_WATCHDOG}'\n")


def boot(mode: str, zipapp: str, where) -> dict:
    share = where / mode
    share.mkdir()
    guest = ["/usr/bin/python3", str(ROOT / "tests" / "init_vm_guest.py"), mode, zipapp, str(ROOT)]
    init = ["--init", "systemd" if mode == "systemd" else "busybox"]
    if mode == "busybox":
        write_board("db", "web", share=str(share))  # ham starts at boot, from the inittab
    if mode != "systemd":
        inittab = where / f"{mode}.inittab"
        inittab.write_text(busybox_inittab(zipapp) if mode == "busybox" else openrc_inittab(guest))
        init += ["--inittab", str(inittab)]
    done = subprocess.run([str(ROOT / "scripts" / "vm-test"), "--device", "softdog", *init,
                           "--share", str(share), "--timeout", "300", "--", *guest],
                          check=False, capture_output=True, text=True, timeout=420)
    if done.returncode == 126:
        skip_or_fail(f"scripts/vm-test could not set up the VM: {done.stderr.strip()}")
    facts = share / "facts.json"
    return {"rc": done.returncode, "stderr": done.stderr,
            "facts": json.loads(facts.read_text()) if facts.exists() else {},
            "log": (share / "ham.log").read_text() if (share / "ham.log").exists() else "",
            "watchdog": read_lines(share / "watchdog-after-stop"), "stops": read_lines(share / "stops")}


def read_lines(path) -> list[str]:
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    reason = unavailable() or next((f"needs {tool} (apt-get install {package})" for tool, package in
                                    (("systemctl", "systemd"), ("openrc", "openrc"))
                                    if shutil.which(tool) is None), None)
    if reason:
        skip_or_fail(reason)
    zipapp = str(request.getfixturevalue("hamtools_zip"))
    where = tmp_path_factory.mktemp("init-vm")
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(MODES, pool.map(lambda mode: boot(mode, zipapp, where), MODES)))


def facts(runs, mode: str) -> dict:
    run = runs[mode]
    assert run["rc"] == 0 and run["facts"], run["stderr"]
    return run["facts"]


# ---- systemd ----------------------------------------------------------------------------------

def test_systemd_starts_it_as_a_notify_service_ready_when_started(runs):
    f = facts(runs, "systemd")
    assert f["start"]["rc"] == 0, f["start"]["err"]
    assert f["answers at once"] == 0  # Type=notify: `systemctl start` returned once ham was ready
    show = f["show"]
    assert (show["Type"], show["NotifyAccess"], show["KillMode"]) == ("notify", "all", "process")
    assert show["ActiveState"] == "active" and show["StatusText"] == "1 entities"
    assert int(show["MainPID"]) == f["status"]["ham_pid"]  # READY=1 came with MAINPID=
    assert f["web cgroup"] == "0::/system.slice/ham.service"


def test_systemd_is_hams_guardian_and_follows_the_new_ham(runs):
    """SIGKILL ham under systemd: the unit runs ham without a guardian of its own, systemd
    restarts it, and the new ham's READY=1 with MAINPID= makes it the unit's main process,
    with the same entities running."""
    moved = facts(runs, "systemd")["takeover"]
    assert moved["guardian"] is None  # --no-guardian: two guardians would fight
    assert moved["heir"] and moved["heir"] == moved["ham now"], moved
    assert moved["show"]["ActiveState"] == "active" and moved["show"]["NRestarts"] == "1", moved
    assert moved["same entities"], moved


def test_systemd_reload_applies_the_files_and_a_bad_file_fails_the_reload(runs):
    f = facts(runs, "systemd")
    assert f["reload"]["rc"] == 0 and set(f["after reload"]) == {"web", "extra"}
    assert f["bad reload"]["rc"] != 0 and f["after bad reload"] == f["after reload"]
    assert re.search(r"hamctl: \S+/board.toml:\d+: Expected ']'", f["after watchdog restart"]["journal"])


def test_systemd_restart_leaves_the_entities_running_and_the_new_ham_adopts_them(runs):
    f = facts(runs, "systemd")
    after = f["after restart"]
    assert f["restart"]["rc"] == 0 and after["show"]["MainPID"] != f["show"]["MainPID"]
    assert after["pids"] == f["after reload"]  # KillMode=process: same processes, re-adopted
    # the SIGKILLed ham (the takeover test) left the softdog armed, no magic close, and its
    # 60 s timeout; the restart's stop was ham_stop
    assert after["watchdog"] == ["active 60", OPERATOR_STOP]


def test_systemd_watchdog_restarts_a_hung_ham(runs):
    f = facts(runs, "systemd")
    assert f["after restart"]["show"]["NRestarts"] == "0"  # no watchdog firing before the hang
    restarted = f["watchdog restart"]
    assert restarted and restarted["NRestarts"] == "1" and restarted["ActiveState"] == "active"
    after = f["after watchdog restart"]
    assert "Watchdog timeout (limit 5s)!" in after["journal"] and not after["hung alive"]
    assert after["pids"] == f["after reload"]


def test_systemd_stop_is_ham_stop_and_shutdown_is_sigterm(runs):
    f = facts(runs, "systemd")
    stopped = f["after stop"]
    assert f["stop"]["rc"] == 0 and stopped["show"]["ActiveState"] == "inactive"
    assert stopped["web alive"]  # ham_stop leaves the entities running
    assert stopped["watchdog"][-1] == OPERATOR_STOP
    assert f["after start again"]["pids"] == f["after reload"]
    # the poweroff after the guest script: ExecStop saw the system stopping and sent SIGTERM
    assert runs["systemd"]["watchdog"][-1] == SHUTDOWN_STOP
    assert runs["systemd"]["log"].rstrip().endswith("left armed (30 s) for the shutdown")


# ---- busybox init -------------------------------------------------------------------------------

def test_busybox_init_runs_ham_and_respawns_it(runs):
    f = facts(runs, "busybox")
    booted, killed = f["booted"], f["after SIGKILL"]
    assert booted["pid 1"] == "busybox" and booted["ham parent"] == 1
    assert killed["ham"] and killed["parent"] == 1  # a new ham, from init's respawn
    assert killed["web alive"] and killed["pids"] == booted["pids"]  # re-adopted, not restarted
    assert f["web restarted"]  # and supervised by the new ham


def test_busybox_shutdown_line_stops_ham_with_sigterm_and_its_services_in_order(runs):
    log = runs["busybox"]["log"]
    assert "SIGTERM: stopping with the entities" in log
    assert runs["busybox"]["stops"] == ["web by ham", "db by ham"]  # reverse start order
    assert runs["busybox"]["watchdog"] == [SHUTDOWN_STOP]


# ---- OpenRC -------------------------------------------------------------------------------------

def test_openrc_boots_ham_in_the_default_runlevel(runs):
    f = facts(runs, "openrc")
    booted = f["booted"]
    assert booted["pid 1"] == "busybox" and "ham" in booted["rc-status"]["out"]
    assert "started" in booted["rc-status"]["out"] and "web" in booted["pids"]
    assert f["status"]["rc"] == 0 and "web" in f["status"]["out"]


def test_openrc_reload_restart_stop_start(runs):
    f = facts(runs, "openrc")
    web = f["booted"]["pids"]["web"]
    assert f["reload"]["rc"] == 0 and set(f["after reload"]) == {"web", "extra"}
    assert f["restart"]["rc"] == 0 and f["after restart"]["pids"] == f["after reload"]
    assert f["after restart"]["watchdog"] == "active 60"  # the restart's new ham holds it again
    stopped = f["after stop"]
    assert f["stop"]["rc"] == 0 and stopped["hamctl"] == 3 and stopped["web alive"]
    assert stopped["watchdog"] == OPERATOR_STOP and stopped["status"]["rc"] == 3
    assert f["start"]["rc"] == 0 and f["after start"]["pids"]["web"] == web
    assert f["after start"]["status"]["rc"] == 0


def test_openrc_shutdown_stops_ham_with_sigterm(runs):
    assert runs["openrc"]["watchdog"] == [SHUTDOWN_STOP]
    assert runs["openrc"]["log"].count("SIGTERM: stopping") == 1
