"""hamtools.core.proc: posix_spawn, pidfds for children and strangers, identity, trees."""

import os
import signal
import subprocess
import sys
import time

import pytest

from hamtools.core import proc
from hamtools.core.loop import Loop


def _wait_gone(p: proc.Process, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not p.exited():
        assert time.monotonic() < deadline, f"{p} still running"
        time.sleep(0.01)


def test_spawn_resets_signal_mask_and_ignored_signals(tmp_path):
    out = tmp_path / "status"
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2])
    try:
        child = proc.spawn(["/bin/sh", "-c", f"grep -E '^Sig(Blk|Ign)' /proc/self/status > {out}"])
        assert child.wait(block=True).success
        text = out.read_text()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])
    fields = dict(line.split(":\t") for line in text.splitlines())
    assert int(fields["SigBlk"], 16) == 0
    ignored = int(fields["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1))  # Python ignores it; the child must not


def test_spawn_uses_path_no_shell_and_own_group():
    child = proc.spawn(["sleep", "5"])
    try:
        assert os.getpgid(child.pid) == child.pid
        assert open(f"/proc/{child.pid}/comm").read().strip() == "sleep"
    finally:
        child.send_signal(signal.SIGKILL)
    status = child.wait(block=True)
    assert (status.signal, str(status), status.returncode) == (9, "killed by SIGKILL", -9)


def test_spawn_shell_only_when_asked_and_env():
    child = proc.spawn(['echo "$X" > /dev/null; exit 3'], shell=True, env={"X": "1"})
    assert child.wait(block=True) == proc.ExitStatus(code=3)
    with pytest.raises(FileNotFoundError):
        proc.spawn(["/nonexistent/program"])


def test_pidfd_on_a_stranger_sees_exit_but_cannot_wait():
    stranger = subprocess.Popen(["sleep", "5"])
    held = proc.Process.open(stranger.pid)
    assert not held.exited()
    with pytest.raises(ChildProcessError):
        held.wait()  # the ECHILD trap: not our child as far as this object knows
    loop = Loop()
    seen = []
    loop.watch_pidfd(held.pidfd, lambda: seen.append(True))
    stranger.kill()
    assert loop.run_until(lambda: seen, timeout=5)
    assert held.exited()
    stranger.wait()
    assert not held.send_signal(signal.SIGTERM)  # reaped: ESRCH, reported as False
    held.close()
    loop.close()


def test_identity_is_pid_and_start_time():
    me = proc.ProcessId.of(os.getpid())
    assert me.alive()
    assert proc.ProcessId(os.getpid(), me.start + 1).alive() is False
    assert proc.ProcessId.of(2**22 + 12345) is None
    with pytest.raises(ProcessLookupError):
        proc.Process.open(os.getpid(), expect=proc.ProcessId(os.getpid(), me.start + 1))
    with pytest.raises(ProcessLookupError):
        proc.Process.open(0)


def test_start_time_parses_a_comm_with_spaces_and_parens(tmp_path):
    odd = tmp_path / "a b) (c"
    odd.symlink_to("/bin/sleep")
    child = proc.spawn([str(odd), "5"])
    try:
        assert proc.start_time(child.pid) >= proc.start_time(os.getpid())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(block=True)


def test_signal_identity_never_hits_a_recycled_pid():
    victim = subprocess.Popen(["sleep", "5"])
    ident = proc.ProcessId.of(victim.pid)
    stale = proc.ProcessId(victim.pid, ident.start - 1)  # "the process that had this pid before"
    assert proc.signal_identity(stale, signal.SIGKILL) is False
    assert victim.poll() is None
    assert proc.signal_identity(ident, signal.SIGKILL) is True
    assert victim.wait(5) == -9


def test_exit_status_decoding():
    assert str(proc.ExitStatus.from_wait_status(0x0100)) == "exited 1"
    assert str(proc.ExitStatus.from_wait_status(0x008b)) == "killed by SIGSEGV (core dumped)"
    assert str(proc.ExitStatus.from_wait_status(0x000f)) == "killed by SIGTERM"
    assert str(proc.ExitStatus(signal=64)) == "killed by SIGRTMAX"
    with pytest.raises(ValueError):
        proc.ExitStatus.from_wait_status(0x137f)  # stopped, not terminated


def test_kill_tree_reaches_grandchildren_outside_the_group():
    # The script starts a grandchild in a new session (escapes the group), then waits.
    child = proc.spawn(["/bin/sh", "-c", "setsid sleep 30 & sleep 30 & wait"])
    deadline = time.monotonic() + 5
    while len(proc.descendants(child.pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    family = proc.descendants(child.pid)
    assert proc.kill_tree(child, signal.SIGTERM) >= 3
    assert child.wait(block=True).signal == signal.SIGTERM
    deadline = time.monotonic() + 5
    while any(ident.alive() and _state(ident.pid) != "Z" for ident in family):
        assert time.monotonic() < deadline, "a descendant survived"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        data = open(f"/proc/{pid}/stat").read()
    except FileNotFoundError:
        return "gone"
    return data[data.rindex(")") + 2]


def test_escalate_kills_what_ignores_sigterm():
    child = proc.spawn([sys.executable, "-c",
                        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                        "print('x', flush=True); time.sleep(30)"])
    time.sleep(0.3)  # let it install SIG_IGN
    from hamtools.core.clock import FakeClock

    loop = Loop(FakeClock(autojump=0.05))  # jump only after 50 real ms of quiet
    done = []
    loop.watch_pidfd(child.pidfd, lambda: done.append(child.wait()))
    proc.escalate(loop, child, signum=signal.SIGTERM, grace=10.0)  # 10 fake seconds
    assert loop.run_until(lambda: done, timeout=60)
    assert done[0].signal == signal.SIGKILL
    loop.close()


def test_reap_all_and_subreaper():
    child = subprocess.Popen(["true"])
    time.sleep(0.2)
    reaped = dict(proc.reap_all())
    assert reaped[child.pid] == proc.ExitStatus(code=0)
    child.returncode = 0  # tell Popen: already reaped
    # PR_SET_CHILD_SUBREAPER round trip, in a child so this pytest process stays as it was.
    code = subprocess.run([sys.executable, "-c",
                           "import ctypes; from hamtools.core.proc import set_child_subreaper;"
                           "set_child_subreaper(); v=ctypes.c_int();"
                           "ctypes.CDLL(None).prctl(37, ctypes.byref(v), 0, 0, 0);"
                           "raise SystemExit(0 if v.value == 1 else 1)"],
                          cwd=os.path.dirname(os.path.dirname(__file__))).returncode
    assert code == 0


def test_pidfd_pid_and_from_pidfd():
    child = proc.spawn(["sleep", "5"])
    fd = os.pidfd_open(child.pid)
    adopted = proc.Process.from_pidfd(fd)
    assert adopted.ident == child.ident
    child.send_signal(signal.SIGKILL)
    child.wait(block=True)
    assert proc.pidfd_pid(fd) == -1
    adopted.close()
    child.close()
