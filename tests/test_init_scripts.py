"""scripts/init/ against a real ham from the built zipapp, in a private runtime directory named
by a defaults file (HAM_DEFAULTS): the SysV script's start, stop, status, reload and restart,
racing starts, the shutdown stop (RUNLEVEL 0) against an operator's; and the systemd unit
through `systemd-analyze verify`. tests/test_init_vm.py boots each init for real."""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import ROOT
from tests.hamfix import kill_leftovers

INIT = ROOT / "scripts" / "init"


def board(*names: str) -> str:
    return "".join(f'[service.{name}]\ncommand = "/bin/sleep 3600"\n' for name in names)


@pytest.fixture
def sysv(tmp_path, hamtools_zip):
    """Run the SysV script with a defaults file: ham's log, its board, its runtime dir."""
    run_dir, log, config = tmp_path / "run", tmp_path / "ham.log", tmp_path / "board.toml"
    config.write_text(board("web"))
    defaults = tmp_path / "ham.default"
    defaults.write_text(f'HAMTOOLS={hamtools_zip}\nHAM_RUNTIME_DIR={run_dir}\n'
                        f'HAM_ARGS="-f {log} --config {config}"\n')
    env = {"PATH": os.environ["PATH"], "HAM_DEFAULTS": str(defaults)}

    def script(*args, **more):
        return subprocess.run([str(INIT / "ham.sysv"), *args], env={**env, **more},
                              check=False, capture_output=True, text=True, timeout=60)

    def hamctl(*args):
        return subprocess.run([str(hamtools_zip), "hamctl", *args], check=False, capture_output=True, text=True,
                              env={**env, "HAM_RUNTIME_DIR": str(run_dir)}, timeout=30)

    def pids() -> dict:
        import json

        done = hamctl("status", "--json")
        if done.returncode != 0:
            return {}
        data = json.loads(done.stdout)
        return {"ham": data["ham_pid"], **{e["name"]: e["pid"] for e in data["entities"] if e["pid"]}}

    script.hamctl, script.pids, script.log, script.config = hamctl, pids, log, config
    seen = set()
    script.seen = seen
    yield script
    seen |= set(pids().values())
    hamctl("stop")
    kill_leftovers(seen)


def test_start_status_and_a_second_start(sysv):
    assert sysv("status").returncode == 3  # LSB: not running
    started = sysv("start")
    assert started.returncode == 0, started.stderr
    first = sysv.pids()
    sysv.seen.update(first.values())
    assert set(first) == {"ham", "web"}  # the defaults file's --config
    assert "ham started" in sysv.log.read_text()  # and its -f
    again = sysv("start")
    assert again.returncode == 0 and "already running" in again.stdout
    assert sysv.pids() == first
    status = sysv("status")
    assert status.returncode == 0 and f"ham pid {first['ham']}" in status.stdout and "web" in status.stdout


def test_racing_starts_leave_one_ham_and_all_succeed(sysv):
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda _: sysv("start"), range(4)))
    assert [d.returncode for d in done] == [0, 0, 0, 0], [d.stderr for d in done]
    now = sysv.pids()
    sysv.seen.update(now.values())
    assert sysv.log.read_text().count("ham started") == 1  # the others found it or lost the lock


def test_reload_applies_the_files_and_a_bad_file_changes_nothing(sysv):
    assert sysv("start").returncode == 0
    sysv.config.write_text(board("web", "extra"))
    reloaded = sysv("reload")
    assert reloaded.returncode == 0, reloaded.stderr
    after = sysv.pids()
    sysv.seen.update(after.values())
    assert set(after) == {"ham", "web", "extra"}
    sysv.config.write_text(board("web") + "[service.broken\n")
    bad = sysv("reload")
    assert bad.returncode == 1 and "board.toml:3:" in bad.stderr
    assert sysv.pids() == after


def test_operator_stop_is_ham_stop_and_the_next_start_adopts(sysv):
    assert sysv("start").returncode == 0
    before = sysv.pids()
    sysv.seen.update(before.values())
    stopped = sysv("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert sysv("status").returncode == 3
    os.kill(before["web"], 0)  # ham_stop leaves the entities running
    assert "SIGTERM" not in sysv.log.read_text()
    assert sysv("start").returncode == 0
    assert sysv.pids()["web"] == before["web"]  # re-adopted, not started again
    restarted = sysv("restart")
    assert restarted.returncode == 0, restarted.stderr
    after = sysv.pids()
    assert after["ham"] != before["ham"] and after["web"] == before["web"]


def test_stop_at_shutdown_is_sigterm(sysv):
    assert sysv("start").returncode == 0
    sysv.seen.update(sysv.pids().values())
    stopped = sysv("stop", RUNLEVEL="0")  # what sysvinit's rc sets for the K scripts
    assert stopped.returncode == 0, stopped.stderr
    assert sysv("status").returncode == 3
    assert "SIGTERM: stopping" in sysv.log.read_text()


def test_stop_without_ham_and_bad_usage(sysv):
    stopped = sysv("stop")
    assert stopped.returncode == 0 and "not running" in stopped.stdout
    bad = sysv("frobnicate")
    assert bad.returncode == 2 and "Usage:" in bad.stderr


def test_runtime_dir_from_the_environment(sysv, tmp_path, hamtools_zip):
    """Without HAM_RUNTIME_DIR in the defaults file, the caller's environment names it."""
    other = tmp_path / "other"
    defaults = tmp_path / "bare.default"
    defaults.write_text(f'HAMTOOLS={hamtools_zip}\nHAM_ARGS="-f {tmp_path / "other.log"}"\n')  # -f: no stderr kept
    started = sysv("start", HAM_DEFAULTS=str(defaults), HAM_RUNTIME_DIR=str(other))
    assert started.returncode == 0, started.stderr
    try:
        assert (other / "control").exists()
        assert sysv("status").returncode == 3  # the defaults file's directory has none
    finally:
        assert sysv("stop", HAM_DEFAULTS=str(defaults), HAM_RUNTIME_DIR=str(other)).returncode == 0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("HAMTOOLS_VM_REQUIRED"),
                    reason="needs systemd-analyze (apt-get install systemd)")
def test_the_systemd_unit_verifies_clean(tmp_path, hamtools_zip):
    """The unit as shipped, but for the zipapp's path (verify checks that ExecStart= exists)."""
    unit = tmp_path / "ham.service"
    unit.write_text((INIT / "ham.service").read_text().replace("/usr/bin/hamtools", str(hamtools_zip)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr
    broken = tmp_path / "broken.service"  # verify's warnings do fail this test
    broken.write_text(unit.read_text().replace("KillMode=process", "KillMode=proces"))
    done = subprocess.run(["systemd-analyze", "verify", str(broken)], check=False, capture_output=True, text=True, timeout=60)
    assert "Failed to parse kill mode" in done.stderr
