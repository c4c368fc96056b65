"""The core applets on a target where psutil cannot be imported (a wheel for another libc or
architecture, a stripped image): ham, hamctl, heartbeat, sockmon and wdt, run from a copy of
the built zipapp whose psutil raises ImportError. A copy rather than an import hook, so that
every process it starts meets the block too: ham's lean re-exec, sockmon's extracted tree.
What needs psutil (sockmon's name: targets) says so in one line."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from tests.hamfix import HamRunner, kill_leftovers, wait_for
from tests.wdt_fakes import DEVICE, SOFTDOG_NEW, make_sysfs

BLOCK = "raise ImportError('psutil blocked for this test')\n"


def without_psutil(zip_path, into):
    """A copy of the zipapp whose psutil package raises ImportError when imported."""
    data = zip_path.read_bytes()
    with zipfile.ZipFile(zip_path) as source, open(into, "wb") as out:
        out.write(data[:data.index(b"\n") + 1])  # the shebang
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
            for info in source.infolist():
                if info.filename == "site-packages/psutil/__init__.pyc":
                    continue  # zipimport would take the bytecode over the source
                body = BLOCK.encode() if info.filename == "site-packages/psutil/__init__.py" else source.read(info)
                target.writestr(info, body)
    os.chmod(into, 0o755)
    return into


@pytest.fixture(scope="module")
def blocked(hamtools_zip, tmp_path_factory):
    return without_psutil(hamtools_zip, tmp_path_factory.mktemp("blocked") / "hamtools")


@pytest.fixture
def run(blocked, clean_python, tmp_path):
    """Run an applet of the blocked zipapp the way a target does (python3 -I, bare env)."""
    env = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv"),
           "HAM_RUNTIME_DIR": str(tmp_path / "run")}

    def go(*args, wait=True, more_env=None, **kw):
        command = [clean_python, "-I", str(blocked), *map(str, args)]
        if not wait:
            return subprocess.Popen(command, env={**env, **(more_env or {})}, cwd=tmp_path, **kw)
        return subprocess.run(command, env={**env, **(more_env or {})}, cwd=tmp_path, capture_output=True,
                              text=True, timeout=30, check=False)

    go.env = env
    return go


@pytest.fixture
def ham(run, tmp_path):
    """ham from the blocked zipapp, with a heartbeat service from a TOML file."""
    (tmp_path / "board.toml").write_text('[service.svc]\ncommand = "/bin/sleep 600"\nheartbeat = "1s"\n'
                                         "missed_low = 3\nmissed_high = 5\n")
    runner = HamRunner(tmp_path / "run")
    os.makedirs(runner.dir)
    runner.proc = run("ham", "--foreground", "--runtime-dir", runner.dir, "-f", runner.log,
                      "--config", tmp_path / "board.toml", wait=False)
    wait_for(runner.answers, what="ham from the blocked zipapp")
    yield runner
    status = run("hamctl", "status", "--json")
    pids = [e["pid"] for e in json.loads(status.stdout)["entities"] if e["pid"]] if status.returncode == 0 else []
    runner.stop()
    kill_leftovers(pids)


def status(run) -> dict:
    done = run("hamctl", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def entity(run, name) -> dict:
    return next(e for e in status(run)["entities"] if e["name"] == name)


def test_the_copy_really_cannot_import_psutil(run):
    done = run("sockmon", "--watch", "name:anything", "--restart", "/bin/true")
    assert (done.returncode, done.stderr) == (1, "sockmon: name: targets need psutil (psutil blocked for this test)\n")


def test_ham_and_hamctl(run, ham):
    assert status(run)["ham_pid"] == ham.proc.pid  # the lean re-exec ran, in place
    assert wait_for(lambda: entity(run, "svc")["run"] == "running")
    attached = run("hamctl", "attach", "other", "--", "/bin/sleep", "600")
    assert attached.returncode == 0, attached.stderr
    other = wait_for(lambda: entity(run, "other")["pid"])
    assert run("hamctl", "check", "svc").returncode == 0
    assert run("hamctl", "lookup", "other").stdout.strip() == str(other)
    restarted = run("hamctl", "restart", "svc")
    assert restarted.returncode == 0, restarted.stderr
    assert wait_for(lambda: entity(run, "svc")["restarts"] == 1 and entity(run, "svc")["run"] == "running")
    stopped = run("hamctl", "stop", "--stop-entities")
    assert stopped.returncode == 0, stopped.stderr
    assert ham.proc.wait(10) == 0
    assert "Traceback" not in ham.read_log() and "internal error" not in ham.read_log()
    gone = run("hamctl", "status")
    assert gone.returncode == 3 and gone.stderr.startswith("hamctl: ")


def test_heartbeat_one_shot_and_feeder(run, ham):
    assert run("heartbeat", "svc").returncode == 0
    unknown = run("heartbeat", "nobody")
    assert unknown.returncode == 3 and "no such entity" in unknown.stderr
    before = entity(run, "svc")["beats"]
    parent = subprocess.Popen(["sleep", "1"])
    feeder = run("heartbeat", "--every", "0.2", "--while-pid", parent.pid, "svc")
    parent.wait()
    assert feeder.returncode == 0, feeder.stderr  # it ended with the pid it beat for
    assert entity(run, "svc")["beats"] >= before + 3
    assert entity(run, "svc")["heartbeat_state"] == "healthy"


def test_sockmon_watches_what_needs_no_psutil(run, tmp_path):
    script = tmp_path / "restart.sh"
    script.write_text(f'#!/bin/sh\necho "$SOCKMON_TARGET $SOCKMON_REASON" >> {tmp_path}/runs\n')
    script.chmod(0o755)
    server = subprocess.Popen(["sleep", "0.5"])
    done = run("sockmon", "--watch", f"pid:{server.pid}", "--restart", script, "--log", "stderr")
    server.wait()
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs").read_text() == f"pid:{server.pid} exited\n"
    path = tmp_path / "s.sock"  # a unix server that serves one connection for half a second
    serve = ("import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); "
             "print(flush=True); s.accept(); time.sleep(0.5)")
    server = subprocess.Popen([sys.executable, "-c", serve, str(path)], stdout=subprocess.PIPE)
    server.stdout.readline()
    done = run("sockmon", "--watch", f"unix:{path}", "--restart", script, "--retries", "1", "--log", "stderr")
    server.wait()
    assert done.returncode == 1 and "giving up" in done.stderr, done.stderr  # the server stays dead
    assert (tmp_path / "runs").read_text().splitlines()[1].startswith(f"unix:{path} ")  # eof, reset...


def test_wdt_reads_the_watchdog_without_psutil(run, tmp_path):
    make_sysfs(tmp_path / "sys", SOFTDOG_NEW)
    sysfs = {"HAMTOOLS_SYSFS": str(tmp_path / "sys")}
    info = run("wdt", "-d", DEVICE, "info", "--json", more_env=sysfs)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["identity"] == "Software Watchdog"
    listed = run("wdt", "list", more_env=sysfs)  # the typer path
    assert listed.returncode == 0 and "Software Watchdog" in listed.stdout, listed.stderr
