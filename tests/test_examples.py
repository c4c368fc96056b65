"""The seed 002 programs (scripts/examples/) against a real ham, with real processes."""

import os
import signal
import subprocess
import sys
import time

from hamtools.ham import ham_detach_name, ham_status
from tests.conftest import ROOT
from tests.hamfix import entity_status, ham, wait_for  # noqa: F401

EXAMPLES = ROOT / "scripts" / "examples"


def example(ham, name, *args, **kw):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], env=ham.env(),
                          capture_output=True, text=True, timeout=30, **kw)


def background(ham, name, *args):
    return subprocess.Popen([sys.executable, "-u", str(EXAMPLES / name), *map(str, args)], env=ham.env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def readline(proc, timeout=15):
    started = time.monotonic()
    line = proc.stdout.readline()
    assert line, f"no output in {time.monotonic() - started:.1f} s; stderr: {proc.stderr.read()}"
    return line.rstrip("\n")


def running_pid(name, other_than=None):
    return wait_for(lambda: (s := entity_status(name)) and s["run"] == "running" and s["pid"]
                    not in (None, other_than) and s["pid"], what=f"{name} running")


def test_inetd_monitor_restarts_inetd(ham):
    assert example(ham, "inetd_monitor.py", "/bin/sleep 600").returncode == 0
    first = running_pid("inetd")
    os.kill(first, signal.SIGKILL)
    assert running_pid("inetd", first) != first
    assert entity_status("inetd")["restarts"] == 1
    again = example(ham, "inetd_monitor.py", "/bin/sleep 600")
    assert again.stdout.startswith("add entity failed: entity 'inetd' exists")


def test_nfs_monitor_restart_waitfor_execute_chain(ham, tmp_path):
    log = tmp_path / "mounts"
    done = example(ham, "nfs_monitor.py", "--line", "/bin/sleep 600", "--delay", "300",
                   "--mount1", f"/bin/sh -c 'echo dir1 >> {log}'",
                   "--mount2", f"/bin/sh -c 'echo dir2 >> {log}'")
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for(lambda: log.exists() and log.read_text().split() == ["dir1", "dir2"], what="DONOW mounts")
    first = running_pid("Fs-nfs2")
    killed = time.monotonic()
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: log.read_text().split() == ["dir1", "dir2", "dir1", "dir2"], what="remounts")
    # restart (1 s start window), 300 ms, mount 1, 300 ms, mount 2
    assert time.monotonic() - killed >= 1.6
    assert running_pid("Fs-nfs2", first)


def test_client_receives_pulses_and_the_independent_signal_first(ham, tmp_path):
    assert example(ham, "inetd_monitor.py", "/bin/sleep 600").returncode == 0
    assert example(ham, "nfs_monitor.py", "--line", "/bin/sleep 600", "--delay", "700",
                   "--mount1", "/bin/true", "--mount2", "/bin/true").returncode == 0
    client = background(ham, "client.py", "--delay", "400")
    try:
        assert readline(client).startswith("Listening: pid")
        inetd = running_pid("inetd")
        os.kill(inetd, signal.SIGKILL)
        # "death" runs restart then the death pulse (FIFO); the INDEPENDENT "restart"
        # condition fires as the restart succeeds: those two in either order, then the
        # delayed one, after its waitfor.
        first_two = {readline(client), readline(client)}
        assert first_two == {"Inetd Death Pulse", "Inetd Restart Pulse: Immediate"}
        assert readline(client) == "Inetd Restart Pulse: Delayed"
        nfs = running_pid("Fs-nfs2")
        os.kill(nfs, signal.SIGKILL)
        signal_lines = [readline(client), readline(client)]
        assert signal_lines == [f"Received signal {signal.SIGRTMIN + 1}, with code = -1, value 18",
                                "FS-nfs2 died, this is the notify signal"]
        # The pulse sits behind restart + waitfor + mount + waitfor + mount in "Death".
        assert readline(client) == "Fs-nfs2 died: this is the possibly delayed pulse"
        ham_detach_name(0, "inetd", 0)
        assert readline(client) == "Inetd detached, so quitting"
        assert client.wait(10) == 0
    finally:
        client.kill()
        client.communicate()
    # The client is gone: its notifications on Fs-nfs2 fail at the next death and are pruned.
    nfs = running_pid("Fs-nfs2")
    os.kill(nfs, signal.SIGKILL)
    wait_for(lambda: not any(a["kind"].startswith("notify") for c in entity_status("Fs-nfs2")["conditions"]
                             for a in c["actions"]), timeout=15, what="pruned notifications")


def test_state_transition_and_raised_event(ham):
    media = background(ham, "state_and_raise.py", "mediaware")
    usb = None
    try:
        assert readline(media) == "mediaware: OK"
        usb = background(ham, "state_and_raise.py", "usbapp")
        assert readline(usb) == "usbapp: subscribed"
        for command in ("state 2", "raise 1 2 5", "raise 1 3 5"):
            media.stdin.write(command + "\n")
            media.stdin.flush()
            assert readline(media) == f"mediaware: published {command}"
        assert readline(usb) == "usbapp: mediaware went OK -> POK: audio playback disabled, telling the user"
        assert readline(usb) == "usbapp: mediaware raised a fault on channel 2"
    finally:
        for proc in (media, usb):
            if proc is not None:
                proc.kill()
                proc.communicate()


def test_crash_and_clear_scripts(ham, tmp_path):
    module = tmp_path / "usb.app"
    module.mkdir()
    record = tmp_path / "record"
    (module / "crash.sh").write_text(f'echo "crash $1" >> {record}\n')
    (module / "clear.sh").write_text(f'echo "clear $1" >> {record}\n')
    app = tmp_path / "app.sh"
    app.write_text(f"[ -e {tmp_path}/broken ] && exit 1\nexec sleep 600\n")
    done = example(ham, "crash_clear.py", module, "/bin/sh", app)
    assert done.stdout == "usb.app: monitored (crash.sh yes, clear.sh yes)\n", done.stderr
    first = running_pid("usb.app")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: record.exists() and record.read_text() == "crash usb.app\n", what="crash.sh")
    second = running_pid("usb.app", first)
    (tmp_path / "broken").touch()  # the next restart fails at once
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: record.read_text() == "crash usb.app\nclear usb.app\ncrash usb.app\n", what="clear.sh")
    assert entity_status("usb.app")["run"] == "failed"
    crashes = [e for e in ham.events() if e["what"] == "CONDDEATH" and e["entity"] == "usb.app"]
    assert [e["deaths"] for e in crashes] == [1, 2] and all(e["time"] > 0 for e in crashes)
    assert "User: usb.app/crash/restart/fail/restartfailed: usb.app: restart failed" in ham.read_log()
    assert ham_status()["entities"]
