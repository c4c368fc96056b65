"""sd_notify both ways, with clients nobody here wrote: Debian's systemd-notify and the
sdnotify package keep services alive (WATCHDOG=1) and ready (READY=1) under ham; ham under a
notify socket reports READY=1, MAINPID= and WATCHDOG=1 itself."""

import array
import json
import os
import shlex
import shutil
import socket
import struct
import sys
import time

import pytest

from hamtools.core import sdnotify
from tests.hamfix import HamRunner, entity_status, wait_for

SYSTEMD_NOTIFY = shutil.which("systemd-notify")


def test_parse_takes_assignments_and_ignores_the_rest():
    assert sdnotify.parse(b"READY=1\nSTATUS=a=b\n\ngarbage\nX_MINE=\nREADY=0") == {
        "READY": "0", "STATUS": "a=b", "X_MINE": ""}
    for bad in (b"READY=1\0", b"STATUS=\xff"):
        with pytest.raises(ValueError):
            sdnotify.parse(bad)


@pytest.fixture
def board(tmp_path, monkeypatch):
    """ham booted from a TOML file written by the test; yields (runner, write)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(run_dir))
    config = tmp_path / "board.toml"
    holder = {}

    def start(text: str, **env) -> HamRunner:
        config.write_text(text)
        runner = HamRunner(run_dir, [f"--config={config}"])
        runner.extra_env = env
        holder["runner"] = runner.start()
        return runner

    yield start
    runner = holder.get("runner")
    if runner is not None:
        runner.stop_and_kill_leftovers()


WATCHED = """
[service.{name}]
command = {command}
heartbeat = "300ms"
missed_low = 1
missed_high = 3
ready = "notify"

[service.after-{name}]
command = "/bin/sleep 600"
after = ["{name}"]
"""


def watched(name: str, script: str) -> str:
    return WATCHED.format(name=name, command=json.dumps(shlex.join(["/bin/sh", "-c", script])))


def _healthy_and_ready(name: str, ham: HamRunner) -> None:
    wait_for(lambda: (entity_status(name) or {}).get("ready"), what=f"{name} ready")
    assert entity_status(f"after-{name}")["run"] == "running"  # gated by READY=1
    start = entity_status(name)["beats"]
    time.sleep(1.2)  # four periods: without its beats it would have missed high
    status = entity_status(name)
    assert status["heartbeat_state"] == "healthy" and status["beats"] >= start + 6
    assert status["restarts"] == 0 and "missed heartbeat" not in ham.read_log()


@pytest.mark.skipif(SYSTEMD_NOTIFY is None, reason="systemd-notify missing: .ci/run installs systemd")
def test_systemd_notify_keeps_a_service_alive_and_marks_it_ready(board):
    # beating from the start (the first period runs from the start), ready 0.4 s later
    script = ("for i in 1 2 3 4; do systemd-notify WATCHDOG=1; sleep 0.1; done; "
              "systemd-notify --ready --status=warming; "
              "while :; do systemd-notify WATCHDOG=1; sleep 0.1; done")
    ham = board(watched("sysd", script))
    assert entity_status("after-sysd")["run"] == "stopped"  # not before READY=1
    _healthy_and_ready("sysd", ham)
    assert entity_status("sysd")["notify"]["status"] == "warming"


def test_the_sdnotify_package_keeps_a_service_alive_and_marks_it_ready(board):
    pytest.importorskip("sdnotify", reason="the sdnotify package is a dev dependency (pyproject.toml)")
    code = ("import sdnotify, time; n = sdnotify.SystemdNotifier()\n"
            "for _ in range(4):\n    n.notify('WATCHDOG=1'); time.sleep(0.1)\n"
            "n.notify('READY=1')\n"
            "while True:\n    n.notify('WATCHDOG=1'); time.sleep(0.1)")
    script = f"exec {sys.executable} -c \"{code}\""
    ham = board(watched("pynotify", script))
    _healthy_and_ready("pynotify", ham)


def test_a_silent_service_misses_its_beats(board, tmp_path):
    """The counter-test: the same service without WATCHDOG=1 is seen missing them."""
    ham = board(watched("mute", "systemd-notify --ready 2>/dev/null; sleep 600"))
    wait_for(lambda: entity_status("mute")["heartbeat_state"] != "healthy", what="a miss")
    assert "missed heartbeat" in ham.read_log()


def test_the_environment_a_service_gets(board, tmp_path):
    out = tmp_path / "env"
    script = f'echo "$$ $NOTIFY_SOCKET $WATCHDOG_USEC $WATCHDOG_PID" > {out}; exec sleep 600'
    ham = board(watched("env", script).replace('ready = "notify"', ""))
    wait_for(lambda: out.exists() and out.read_text().strip(), what="the service's environment")
    pid, path, usec, watchdog_pid = out.read_text().split()
    assert path == os.path.join(ham.dir, "notify") and usec == "300000" and watchdog_pid == pid
    assert int(pid) == entity_status("env")["pid"]


def _send(path: str, message: bytes, fds=()) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    sock.sendmsg([message], ancillary, 0, path)
    sock.close()


def test_strangers_are_refused_and_passed_fds_never_leak(board):
    ham = board(watched("w", "sleep 600").replace('ready = "notify"', ""))
    path = os.path.join(ham.dir, "notify")
    wait_for(lambda: all(entity_status(n)["run"] == "running" for n in ("w", "after-w")), what="both up")
    pipes_before = _pipes(ham.proc.pid)
    readers = [os.pipe() for _ in range(20)]
    for _ in range(5):
        _send(path, b"WATCHDOG=1\nREADY=1", [r for r, _ in readers])  # we are no entity's process
    _send(path, b"x" * 5000)  # over 4096: truncated, dropped
    # the truncated one came last: once it is logged, ham has taken (and closed) every fd
    wait_for(lambda: "dropped a datagram that was truncated" in ham.read_log(), what="the last datagram")
    assert "refused: no entity of its own" in ham.read_log()
    assert _pipes(ham.proc.pid) == pipes_before  # (its sockets come and go with our status calls)
    for r, w in readers:  # ham closed its copies: our write ends see no other reader
        os.close(r)
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
        os.close(w)
    assert entity_status("w")["beats"] == 0  # the strangers' WATCHDOG=1 counted for nobody


def _pipes(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")
        except FileNotFoundError:  # closed since the listing (a socket of our status calls)
            pass
    return count


@pytest.mark.skipif(SYSTEMD_NOTIFY is None, reason="systemd-notify missing: .ci/run installs systemd")
def test_barrier_lets_systemd_notify_return_at_once(board, tmp_path):
    out = tmp_path / "took"
    script = (f'start=$(date +%s%N); systemd-notify --ready; echo $? $(( ($(date +%s%N) - start) / 1000000 )) '
              f'> {out}; exec sleep 600')
    board(watched("barrier", script))
    wait_for(lambda: out.exists() and out.read_text().strip(), what="systemd-notify's return")
    code, millis = out.read_text().split()
    assert code == "0" and int(millis) < 2000  # without BARRIER's fd closed it waits 5 s


def test_mainpid_moves_the_entity_to_the_new_process(board, tmp_path):
    # a launcher that forks the real daemon, names it with MAINPID=, and exits
    script = ("sleep 600 & child=$!; systemd-notify --ready MAINPID=$child; exit 0")
    board(watched("moved", script).replace('heartbeat = "300ms"', ""))
    wait_for(lambda: (s := entity_status("moved")) and s["pid"] and _cmd(s["pid"]) == "sleep 600",
             what="the move to the forked child")
    time.sleep(0.3)
    status = entity_status("moved")
    assert status["run"] == "running" and status["deaths"] == 0  # the launcher's exit is no death
    os.kill(status["pid"], 9)
    wait_for(lambda: entity_status("moved")["deaths"] == 1, what="the new main pid's death")


def test_watchdog_trigger_is_a_missed_heartbeat_now(board):
    script = "systemd-notify --ready; sleep 0.3; systemd-notify WATCHDOG=trigger; exec sleep 600"
    ham = board(watched("trig", script).replace('heartbeat = "300ms"', 'heartbeat = "60s"'))
    wait_for(lambda: entity_status("trig")["heartbeat_state"] == "missedhigh", what="MISSEDHIGH")
    assert "WATCHDOG=trigger" in ham.read_log()


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode().strip()
    except FileNotFoundError:
        return ""


def ham_under_a_manager(tmp_path, monkeypatch, socket_name: str, watchdog_usec: str) -> HamRunner:
    """ham started with NOTIFY_SOCKET=tmp_path/socket_name and WATCHDOG_USEC, as systemd would."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(run_dir))
    runner = HamRunner(run_dir)
    runner.extra_env = {"NOTIFY_SOCKET": str(tmp_path / socket_name), "WATCHDOG_USEC": watchdog_usec}
    return runner.start()


def manager_socket(path) -> socket.socket:
    """A service manager's notify socket, credentials on."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    listener.settimeout(10)
    return listener


def test_ham_under_a_notify_socket_reports_ready_mainpid_and_watchdog(tmp_path, monkeypatch):
    listener = manager_socket(tmp_path / "manager")
    runner = ham_under_a_manager(tmp_path, monkeypatch, "manager", "200000")
    try:
        first, creds = _receive(listener)
        fields = sdnotify.parse(first)
        assert fields["READY"] == "1" and fields["MAINPID"] == str(runner.proc.pid) == str(creds)
        beats = [sdnotify.parse(_receive(listener)[0]) for _ in range(4)]
        assert all(b == {"WATCHDOG": "1"} for b in beats)
        from hamtools.ham import ham_stop

        ham_stop()
        while (fields := sdnotify.parse(_receive(listener)[0])) == {"WATCHDOG": "1"}:
            pass
        assert fields == {"STOPPING": "1"}
        runner.proc.wait(10)
    finally:
        runner.stop()
        listener.close()


def test_after_a_takeover_the_new_ham_reports_its_mainpid(tmp_path, monkeypatch):
    listener = manager_socket(tmp_path / "manager")
    runner = ham_under_a_manager(tmp_path, monkeypatch, "manager", "400000")
    try:
        assert sdnotify.parse(_receive(listener)[0])["MAINPID"] == str(runner.proc.pid)
        from hamtools.ham import ham_status

        heir = ham_status()["guardian_pid"]
        runner.proc.kill()
        runner.proc.wait()
        while (got := _receive(listener)) and sdnotify.parse(got[0]) == {"WATCHDOG": "1"}:
            pass
        fields = sdnotify.parse(got[0])
        assert fields["READY"] == "1" and fields["MAINPID"] == str(heir) == str(got[1])
        assert sdnotify.parse(_receive(listener)[0]) == {"WATCHDOG": "1"}  # and it keeps the watchdog fed
        assert ham_status()["ham_pid"] == heir
    finally:
        runner.stop()
        listener.close()


def _receive(sock) -> tuple[bytes, int]:
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    pid = next(struct.unpack("3i", body)[0] for level, kind, body in ancillary if kind == socket.SCM_CREDENTIALS)
    return data, pid


def test_entities_never_see_hams_own_notify_socket(tmp_path, monkeypatch):
    runner = ham_under_a_manager(tmp_path, monkeypatch, "nobody", "1000000")
    run_dir = tmp_path / "run"
    out = tmp_path / "env"
    try:
        from hamtools.ham import ham_attach

        ham_attach("plain", 0, -1, f"/bin/sh -c 'echo $NOTIFY_SOCKET-$WATCHDOG_USEC > {out}; exec sleep 600'", 0)
        wait_for(lambda: out.exists() and out.read_text().strip(), what="the entity's environment")
        assert out.read_text().strip() == f"{run_dir}/notify-"
    finally:
        runner.stop_and_kill_leftovers()



@pytest.mark.skipif(SYSTEMD_NOTIFY is None, reason="systemd-notify missing: .ci/run installs systemd")
def test_reloading_stopping_errno_and_a_new_watchdog_period(board, tmp_path):
    go = tmp_path / "go"
    script = (f"systemd-notify --ready; while [ ! -e {go} ]; do sleep 0.05; done; "
              "systemd-notify RELOADING=1 ERRNO=5 WATCHDOG_USEC=5000000; sleep 0.5; "
              "systemd-notify --ready; sleep 0.3; systemd-notify STOPPING=1 --status=bye; exec sleep 600")
    ham = board(watched("keys", script))
    wait_for(lambda: (entity_status("keys") or {}).get("ready"), what="READY=1")
    go.touch()
    wait_for(lambda: (entity_status("keys")["notify"] or {}).get("state") == "reloading", what="RELOADING=1")
    reloading = entity_status("keys")
    assert not reloading["ready"] and reloading["notify"]["errno"] == 5
    assert reloading["heartbeat"]["period"] == 5.0  # WATCHDOG_USEC= took effect
    time.sleep(1.0)  # well past the old 300 ms period: the new one holds
    assert entity_status("keys")["heartbeat_state"] == "healthy"
    wait_for(lambda: entity_status("keys")["notify"]["state"] == "stopping", what="STOPPING=1")
    final = entity_status("keys")
    assert final["ready"] and final["notify"]["status"] == "bye"
    notes = [e["note"] for e in ham.events() if e["what"] == "notify"]
    assert notes == ["ERRNO=5 RELOADING WATCHDOG_USEC=5000000", "STOPPING"]


def test_a_uid_with_no_entity_is_refused_without_walking_its_ancestry(monkeypatch):
    """Found by scripts/bench_flood: each stranger's datagram walked up its ancestry through
    /proc (and rebuilt the pid index at every step) only to be refused at the end. A uid that
    owns no running entity is now refused at once; one whose entity is newer than the index
    is still found, through the sender's parent."""
    import subprocess

    from hamtools.core import proc
    from hamtools.hamd import notify as notify_module
    from hamtools.hamd.notify import NotifySocket
    from tests.fuzzing import _Conn
    from tests.hamfix import in_process_ham

    walked = []
    real_parent = proc.parent
    monkeypatch.setattr(notify_module.proc, "parent", lambda pid: walked.append(pid) or real_parent(pid))
    child = subprocess.Popen(["sleep", "60"])  # the sender: a process of ours
    with in_process_ham() as ham:
        sock = NotifySocket(ham, os.path.join(ham.runtime_dir, "notify"))
        try:
            ham.requests.handle(_Conn(4242, control=False), "attach_self", {"name": "theirs", "hp": 10**9})
            assert sock.sender_entity(child.pid, 4243) is None and walked == []  # a stranger
            assert sock.sender_entity(os.getpid(), 4242).name == "theirs" and walked == []
            ham.model.entities["theirs"].pid = None  # gone: the index is stale now
            ham.requests.handle(_Conn(4244, control=False), "attach_self", {"name": "late", "hp": 10**9})
            assert sock.sender_entity(child.pid, 4244).name == "late" and walked == [child.pid]
        finally:
            sock.close()
            child.kill()
            child.wait()
