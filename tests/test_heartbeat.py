"""`hamtools heartbeat`: one-shot, the --every feeder, and the sd_notify form, against a real
ham and a real notify socket."""

import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from hamtools.ham import ham_attach_self, ham_detach_name, ham_detach_self, ham_entity
from tests.conftest import ROOT
from tests.hamfix import entity_status, ham, wait_for  # noqa: F401


def heartbeat(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hamtools", "heartbeat", *args], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=20, **kw)


def test_usage_errors_are_one_line_and_exit_2():
    for args in (["--every"], ["--every", "0", "x"], ["--every", "nan", "x"], ["--while-pid", "1", "x"],
                 ["a", "b"], ["--bogus"]):
        done = heartbeat(*args, env={"NOTIFY_SOCKET": ""})
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, (args, done.stderr)
        assert done.stderr.startswith("heartbeat: ")
    done = heartbeat(env={"NOTIFY_SOCKET": ""})
    assert done.returncode == 2 and "NOTIFY_SOCKET is not set" in done.stderr


def test_without_ham_it_says_so_and_exits_3(tmp_path):
    done = heartbeat("worker", env={"HAM_RUNTIME_DIR": str(tmp_path)})
    assert done.returncode == 3
    assert done.stderr == f"heartbeat: ham is not running (nothing listens on {tmp_path}/client)\n"


def test_one_shot_exit_codes(ham):
    mine = ham_attach_self("beater", 10**9, 2, 4, 0)
    try:
        assert heartbeat("beater").returncode == 0  # root may beat for anyone
        unknown = heartbeat("nobody")
        assert unknown.returncode == 3 and unknown.stderr == "heartbeat: nobody: ham has no such entity\n"
    finally:
        ham_detach_self(mine, 0)


def test_every_keeps_an_entity_healthy_while_its_pid_lives(ham):
    """The feeder beats every 0.1 s while a sleeper lives (three periods), then exits 0 when
    the sleeper ends; the entity saw no miss meanwhile."""
    mine = ham_attach_self("fed", 500 * 10**6, 1, 3, 0)  # 0.5 s period: a miss within 0.75 s
    sleeper = subprocess.Popen(["/bin/sleep", "1.5"])
    try:
        started = time.monotonic()
        done = heartbeat("--every", "0.1", "--while-pid", str(sleeper.pid), "fed")
        took = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert 1.0 < took < 5
        assert entity_status("fed")["heartbeat_state"] == "healthy"
        assert "missed heartbeat" not in ham.read_log()
    finally:
        sleeper.kill()
        ham_detach_self(mine, 0)


def test_every_exits_3_when_ham_says_the_entity_is_gone(ham):
    ham_entity("short-lived", 0, 0)
    feeder = subprocess.Popen([sys.executable, "-m", "hamtools", "heartbeat", "--every", "0.05",
                               "--while-pid", str(os.getpid()), "short-lived"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert feeder.poll() is None  # a placeholder takes beats (they are dropped): it goes on
    ham_detach_name(0, "short-lived", 0)
    assert feeder.wait(10) == 3
    assert feeder.stderr.read() == "heartbeat: short-lived: ham has no such entity\n"


def test_every_rides_out_a_restart_of_ham(ham):
    ham_entity("steady", 0, 0)  # persisted: the next ham knows it too
    feeder = subprocess.Popen([sys.executable, "-m", "hamtools", "heartbeat", "--every", "0.05",
                               "--while-pid", str(os.getpid()), "steady"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        time.sleep(0.3)
        ham.proc.kill()  # gone for a moment, as in a takeover
        ham.proc.wait()
        time.sleep(0.3)
        assert feeder.poll() is None
        ham.start()
        wait_for(lambda: entity_status("steady")["beats"] >= 3, what="beats to the new ham")
        assert feeder.poll() is None
    finally:
        feeder.kill()
        feeder.wait()


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def receive(sock) -> tuple[bytes, int]:
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = next(struct.unpack("3i", body)[0] for level, kind, body in ancillary
               if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS))
    return data, pid


@pytest.mark.parametrize("address", ["path", "abstract"])
def test_sd_notify_form_names_the_calling_script(notify_socket, tmp_path, address):
    sock, path = notify_socket
    if address == "abstract":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(f"\0hamtools-test-{os.getpid()}")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.settimeout(10)
        path = f"@hamtools-test-{os.getpid()}"
    script = subprocess.Popen(["/bin/sh", "-c", f'"$0" -m hamtools heartbeat; echo $? >{tmp_path}/rc; sleep 1',
                               sys.executable], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                               "NOTIFY_SOCKET": path})
    try:
        data, pid = receive(sock)
        assert data == b"WATCHDOG=1"
        assert pid == script.pid if os.geteuid() == 0 else pid != script.pid
        wait_for(lambda: (tmp_path / "rc").exists() and (tmp_path / "rc").read_text() == "0\n")
    finally:
        script.kill()
        script.wait()
        if address == "abstract":
            sock.close()


def test_sd_notify_feeder_beats_until_its_pid_ends(notify_socket):
    sock, path = notify_socket
    sleeper = subprocess.Popen(["/bin/sleep", "0.6"])
    feeder = subprocess.Popen([sys.executable, "-m", "hamtools", "heartbeat", "--every", "0.1",
                               "--while-pid", str(sleeper.pid)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": path})
    beats = 0
    sock.settimeout(0.5)
    try:
        while True:
            try:
                data, _ = receive(sock)
            except TimeoutError:
                break
            assert data == b"WATCHDOG=1"
            beats += 1
        assert feeder.wait(10) == 0
        assert 4 <= beats <= 9
    finally:
        sleeper.kill()
        feeder.kill()
