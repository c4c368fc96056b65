"""ham's descriptors: it raises its own limit, what it starts gets the limit ham was given, the
client socket cannot take the descriptors administrators and entities need, and a listener
with no descriptor free rests instead of spinning (core.fdlimit, hamd.server)."""

import os
import socket
import subprocess
import sys
import time

import pytest

from hamtools.ham import ham_attach, ham_status
from hamtools.hamd.hlog import LIMITED_LINES
from hamtools.hamd.server import FD_RESERVE, MAX_PEERS
from tests.conftest import ROOT
from tests.hamfix import HamRunner, entity_status, wait_for

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import cpu_seconds  # noqa: E402


def nofile(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


@pytest.fixture
def runner(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(run))
    ham = HamRunner(run)
    yield ham
    ham.stop_and_kill_leftovers()


def pid_of(name: str) -> int:
    return wait_for(lambda: (e := entity_status(name)) and e["pid"], what=f"{name}'s pid")


def test_ham_raises_its_limit_and_what_it_starts_gets_the_given_one(runner, tmp_path):
    config = tmp_path / "board.toml"
    config.write_text('[service.forked]\ncommand = "/bin/sleep 600"\nnice = 1\n'  # fork+exec
                      '[service.limited]\ncommand = "/bin/sleep 600"\nrlimits = {nofile = [100, 200]}\n')
    runner.prefix = ["prlimit", "--nofile=1024:4096"]
    runner.extra_args = ["--config", str(config)]
    runner.start()
    assert nofile(runner.proc.pid) == (4096, 4096)
    ham_attach("spawned", 0, -1, "/bin/sleep 600", 0)  # posix_spawn
    assert nofile(pid_of("spawned")) == (1024, 4096)
    assert nofile(pid_of("forked")) == (1024, 4096)
    assert nofile(pid_of("limited")) == (100, 200)  # the service's own limit wins
    assert nofile(ham_status()["guardian_pid"]) == (1024, 4096)
    done = subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "reexec"], env=runner.env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert nofile(runner.proc.pid) == (4096, 4096)  # raised again, from what it was given
    ham_attach("after", 0, -1, "/bin/sleep 600", 0)
    assert nofile(pid_of("after")) == (1024, 4096)


def connect_all(path: str, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:  # the backlog is full
            s.close()
            break
        held.append(s)
    return held


def dropped(held: list[socket.socket]) -> int:
    count = 0
    for s in held:
        try:
            count += s.recv(1) == b""
        except BlockingIOError:
            pass
    return count


def test_clients_cannot_take_the_descriptors_that_administrators_and_entities_need(runner):
    limit = FD_RESERVE + 100
    runner.prefix = ["prlimit", f"--nofile={limit}:{limit}"]  # no room to raise it
    runner.start()
    assert f"ham may open {limit} descriptors: the client socket admits 100 peers at most" in runner.read_log()
    held = connect_all(os.path.join(runner.dir, "client"), 120)
    time.sleep(0.5)
    refused = dropped(held)
    # ham itself holds a dozen below the line, so somewhat more than 20 were refused
    assert 20 < refused < 40, refused
    assert "ham is short of descriptors" in runner.read_log()
    assert ham_status()["ham_pid"] == runner.proc.pid  # the control socket has its room
    ham_attach("still", 0, -1, "/bin/sleep 600", 0)  # and so has a new entity
    assert pid_of("still")
    for s in held:
        s.close()


def test_a_listener_with_no_descriptor_free_rests_instead_of_spinning(runner):
    limit = 40  # below FD_RESERVE: every client is refused, the control socket runs out
    runner.prefix = ["prlimit", f"--nofile={limit}:{limit}"]
    runner.extra_args = ["--no-guardian"]
    runner.start()
    held = connect_all(os.path.join(runner.dir, "control"), MAX_PEERS["control"])
    try:
        time.sleep(0.3)  # ham has taken what it can; the rest wait in the backlog
        before = cpu_seconds(runner.proc.pid)
        time.sleep(1)
        used = cpu_seconds(runner.proc.pid) - before
    finally:
        for s in held:
            s.close()
    assert used < 0.3, f"ham spun on accept: {used:.2f} s of CPU in 1 s"  # it was all of it
    log = runner.read_log()
    assert "cannot accept on the control socket: Too many open files" in log
    assert log.count("cannot accept on the control socket") <= LIMITED_LINES, log
    assert wait_for(lambda: _answers(), what="ham answering once descriptors were free")


def _answers() -> bool:
    try:
        return bool(ham_status())
    except OSError:
        return False
