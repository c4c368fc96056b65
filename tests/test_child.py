"""hamtools.hamd.child: a service's process with every attribute, observed from inside it;
clean errors before exec; cgroups where writable; stopping with escalation on a fake clock."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys

import pytest

from hamtools.core import proc
from hamtools.core.clock import FakeClock
from hamtools.core.loop import Loop
from hamtools.hamd import cgroup, child
from tests.childfix import (PYTHON, need_root, open_dir, report_argv, spec, system_user,  # noqa: F401
                            wait_for, wait_report)


class Log(list):
    def __call__(self, level: int, message: str) -> None:
        self.append(message)


@pytest.fixture
def ham_signals():
    """ham's own signal state (SPEC §3): ignored and blocked signals no child may inherit."""
    ignored = (signal.SIGUSR1, signal.SIGINT, signal.SIGQUIT, signal.SIGALRM, signal.SIGHUP)
    old = {s: signal.signal(s, signal.SIG_IGN) for s in ignored}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGTERM])
    yield ignored
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    for s, handler in old.items():
        signal.signal(s, handler)


def _no_fork(*args, **kw):
    raise AssertionError("took the fork+exec path")


def _assert_clean_signals(report: dict, ignored) -> None:
    assert report["sigblk"] == 0
    for s in ignored:
        assert not report["sigign"] & (1 << (s - 1)), signal.Signals(s).name


def _children() -> set[int]:
    return set(proc.children(os.getpid()))


# -- the fast path ------------------------------------------------------------------------

def test_plain_spec_uses_posix_spawn_with_env_group_and_clean_signals(tmp_path, monkeypatch, ham_signals):
    monkeypatch.setattr(child, "_fork_exec", _no_fork)
    monkeypatch.setenv("HAMTEST_FROM_HAM", "inherited")
    monkeypatch.setenv("HAMTEST_OVERRIDDEN", "ham")
    out = tmp_path / "report"
    s = spec("plain", report_argv(out), env={"HAMTEST_OVERRIDDEN": "spec", "HAMTEST_SPEC": "s"})
    pid = child.start(s, {"HAMTEST_SPEC": "extra", "NOTIFY_SOCKET": "/run/ham/notify"}, Log())
    report = wait_report(pid, out)
    env = report["env"]
    assert (env["HAMTEST_FROM_HAM"], env["HAMTEST_OVERRIDDEN"], env["HAMTEST_SPEC"]) == \
        ("inherited", "spec", "extra")
    assert (env["HAM_ENTITY"], env["NOTIFY_SOCKET"]) == ("plain", "/run/ham/notify")
    assert report["pgid"] == report["pid"] == pid
    _assert_clean_signals(report, ham_signals)
    assert report["uid"] == os.getuid() and report["cwd"] == os.getcwd()


@pytest.mark.parametrize("policy, priority, code", [("other", 0, os.SCHED_OTHER),
                                                      ("rr", 7, os.SCHED_RR)])
def test_posix_policy_alone_is_set_by_posix_spawn(tmp_path, monkeypatch, policy, priority, code):
    monkeypatch.setattr(child, "_fork_exec", _no_fork)
    out = tmp_path / "report"
    s = spec("sched", report_argv(out), sched={"policy": policy, "priority": priority})
    if priority:
        need_root()
    try:
        pid = child.start(s, {}, Log())
    except PermissionError as err:
        print(f"skipped: this machine refuses real-time scheduling ({err})")
        pytest.skip("no real-time scheduling here")
    report = wait_report(pid, out)
    assert (report["policy"], report["priority"]) == (code, priority)


# -- fork+exec: every attribute -----------------------------------------------------------

def test_same_user_attributes_from_inside(tmp_path, ham_signals):
    out = tmp_path / "report"
    work = tmp_path / "work"
    work.mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want_nofile = [min(64, soft), min(128, hard)]
    s = spec("attrs", report_argv(out), cwd=str(work), umask=0o027, nice=7,
             rlimits={"nofile": want_nofile, "core": [0, 0]},
             sched={"policy": "idle", "priority": 0}, cpus=[0], env={"X": "1"})
    pid = child.start(s, {}, Log())
    report = wait_report(pid, out)
    assert report["cwd"] == str(work)
    assert report["umask"] == 0o027
    assert report["nofile"] == want_nofile and report["core"] == [0, 0]
    assert report["nice"] == 7
    assert report["policy"] == os.SCHED_IDLE
    assert report["cpus"] == [0]
    assert report["env"]["X"] == "1" and report["env"]["HAM_ENTITY"] == "attrs"
    assert report["pgid"] == pid
    _assert_clean_signals(report, ham_signals)
    ham_umask = os.umask(0)
    os.umask(ham_umask)
    assert os.getcwd() != str(work) and ham_umask != 0o027  # ham itself untouched


def test_another_user_with_its_own_groups_only(open_dir, ham_signals):
    user = system_user("hamtools-svc", extra_group="hamtools-extra")
    out = os.path.join(open_dir, "report")
    s = spec("asuser", report_argv(out), uid=user.pw_uid, gid=user.pw_gid, cwd=open_dir,
             umask=0o077, nice=-3, rlimits={"nofile": [100, 200], "core": [None, None]},
             cpus=[0], sched={"policy": "batch", "priority": 0})
    pid = child.start(s, {}, Log())
    report = wait_report(pid, out)
    assert (report["uid"], report["euid"]) == (user.pw_uid, user.pw_uid)
    assert (report["gid"], report["egid"]) == (user.pw_gid, user.pw_gid)
    assert report["groups"] == sorted(os.getgrouplist("hamtools-svc", user.pw_gid))
    assert 0 not in report["groups"]  # root's groups never leak
    assert len(report["groups"]) == 2  # its own group and hamtools-extra
    assert report["cwd"] == open_dir and report["umask"] == 0o077
    assert report["nice"] == -3  # set as root, before setuid dropped the right to it
    assert report["nofile"] == [100, 200]
    assert report["core"] == [resource.RLIM_INFINITY] * 2
    assert report["policy"] == os.SCHED_BATCH and report["cpus"] == [0]
    _assert_clean_signals(report, ham_signals)


def test_bare_uid_gets_no_groups_and_its_own_number_as_gid(open_dir):
    need_root()
    out = os.path.join(open_dir, "report")
    pid = child.start(spec("bare", report_argv(out), uid=54321), {}, Log())
    report = wait_report(pid, out)
    assert (report["uid"], report["gid"], report["groups"]) == (54321, 54321, [])


def test_group_only_changes_gid(tmp_path):
    need_root()
    out = tmp_path / "report"
    pid = child.start(spec("gid", report_argv(out), gid=4321), {}, Log())
    report = wait_report(pid, out)
    assert (report["uid"], report["gid"], report["egid"]) == (0, 4321, 4321)


# A ham whose own supplementary groups are 4321 and 4322 (root's are not): what its services get.
START_AND_REPORT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from hamtools.hamd import child
from tests.childfix import report_argv, wait_report
keys = json.loads(sys.argv[3])
pid = child.start({"name": "who", "argv": report_argv(sys.argv[2]), **keys}, {}, lambda *a: None)
print(json.dumps({"ham": sorted(os.getgroups()), "child": wait_report(pid, sys.argv[2])["groups"]}))
"""


@pytest.mark.parametrize("keys, expected", [
    ({"uid": 0}, sorted(os.getgrouplist("root", 0))),  # USER=root: root's own groups
    ({"gid": 4321}, []),  # a gid alone: no supplementary groups
    ({"uid": 0, "gid": 4322}, sorted(os.getgrouplist("root", 4322))),
], ids=["root", "gid-only", "root-with-gid"])
def test_supplementary_groups_are_the_users_never_hams(tmp_path, keys, expected):
    need_root()
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-c", START_AND_REPORT, os.getcwd(), str(out), json.dumps(keys)],
                          extra_groups=[4321, 4322], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["ham"] == [4321, 4322] and seen["child"] == expected


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("keys, code, text", [
    ({"cwd": "/nonexistent/dir"}, errno.ENOENT, "cwd /nonexistent/dir: No such file or directory"),
    ({"argv": ["/nonexistent/program"]}, errno.ENOENT,
     "exec /nonexistent/program: No such file or directory"),
    ({"argv": ["/nonexistent/program"], "umask": 0o022}, errno.ENOENT,
     "exec /nonexistent/program: No such file or directory"),
    ({"cpus": [4096]}, errno.EINVAL, "CPU affinity [4096]: Invalid argument"),
    ({"rlimits": {"nofile": [20, 10]}}, errno.EINVAL, "rlimit nofile 20:10: "),
], ids=["cwd", "program-posix-spawn", "program-fork", "cpus", "rlimit"])
def test_failure_before_exec_is_one_clean_oserror(keys, code, text):
    before = _children()
    with pytest.raises(OSError) as caught:
        child.start(spec("bad", **keys), {}, Log())
    assert caught.value.errno == code
    assert caught.value.strerror.startswith(text)
    assert _children() == before  # nothing half-started, nothing left to reap


def test_setuid_refused_when_ham_is_not_root(open_dir):
    user = system_user("hamtools-svc")
    # A ham that is not root: run the start from a child process that dropped to the user.
    script = (f"import sys; sys.path.insert(0, {os.getcwd()!r})\n"
              "from hamtools.hamd import child\n"
              "try:\n"
              "    child.start({'name': 'x', 'argv': ['/bin/true'], 'uid': 54321}, {}, print)\n"
              "except OSError as err:\n"
              "    print(err.errno, err.strerror)\n")
    done = subprocess.run([PYTHON, "-c", script], user=user.pw_uid, group=user.pw_gid,
                          extra_groups=[], capture_output=True, text=True, cwd=open_dir,
                          env={"PYTHONPATH": os.getcwd()})
    if "No module named" in done.stderr or "Permission denied" in done.stderr:
        print(f"skipped: the second uid cannot read the tree: {done.stderr.strip()}")
        pytest.skip("tree not readable by the second uid")
    # its groups are already none (extra_groups=[]): the first step it cannot take is setgid
    assert done.stdout.strip() == f"{errno.EPERM} setgid 54321: Operation not permitted"


def test_bad_names_are_value_errors():
    with pytest.raises(ValueError, match="unknown rlimit 'files'"):
        child.start(spec("x", rlimits={"files": [1, 1]}), {}, Log())
    with pytest.raises(ValueError, match="unknown scheduling policy 'deadline'"):
        child.start(spec("x", sched={"policy": "deadline", "priority": 0}), {}, Log())


# -- cgroups ------------------------------------------------------------------------------

def test_cgroup_settings_written_where_the_parent_made_the_group(tmp_path):
    # A stand-in hierarchy (a plain directory): what ham writes, and where.
    log = Log()
    groups = cgroup.Hierarchy(log, root=str(tmp_path))
    path = groups.prepare("web", {"memory.max": "64M", "pids.max": "100", "cgroup.max.depth": "2"})
    assert path == str(tmp_path / "hamtools" / "web")
    assert (tmp_path / "hamtools" / "web" / "memory.max").read_text() == "64M"
    assert (tmp_path / "hamtools" / "web" / "pids.max").read_text() == "100"
    # controllers enabled on the way down (the last write wins in a plain file: pids)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+pids"
    assert (tmp_path / "hamtools" / "cgroup.subtree_control").read_text() == "+pids"
    assert groups.prepare("../evil", {"pids.max": "1"}) is None
    assert log == ["../evil: no cgroup for a name that is not a directory name"]


def test_without_cgroup_v2_the_service_starts_and_ham_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setattr(child, "_fork_exec", _no_fork)  # no group to join: posix_spawn
    log = Log()
    (tmp_path / "not-a-dir").write_text("")
    groups = cgroup.Hierarchy(log, root=str(tmp_path / "not-a-dir"))
    out = tmp_path / "report"
    for _ in range(2):
        pid = child.start(spec("nocg", report_argv(out), cgroup={"pids.max": "10"}), {}, log,
                          cgroups=groups)
        assert wait_report(pid, out)["pid"] == pid
    assert len(log) == 1 and log[0].startswith("cgroup limits unavailable: ")


def test_find_root_prefers_the_unified_mount(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
                      "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n")
    assert cgroup.find_root(str(mounts)) == "/sys/fs/cgroup/unified"
    mounts.write_text("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    assert cgroup.find_root(str(mounts)) == "/sys/fs/cgroup"
    mounts.write_text("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
    assert cgroup.find_root(str(mounts)) is None


@pytest.fixture
def real_cgroups():
    root = cgroup.find_root()
    if root is None or os.geteuid() != 0:
        print(f"skipped: no writable cgroup v2 here (mounted at {root}, euid {os.geteuid()})")
        pytest.skip("no writable cgroup v2")
    log = Log()
    groups = cgroup.Hierarchy(log)
    if groups.base() is None:
        print(f"skipped: {log[0]}")
        pytest.skip("cgroup v2 not writable")
    yield root, groups, log
    for name in ("hamtools-test-join", "hamtools-test-pids"):
        groups.remove(name)


def test_child_joins_its_cgroup_before_exec(tmp_path, real_cgroups):
    root, groups, log = real_cgroups
    out = tmp_path / "report"
    pid = child.start(spec("hamtools-test-join", report_argv(out), cgroup={"cgroup.max.descendants": "0"}),
                      {}, log, cgroups=groups)
    report = wait_report(pid, out)
    line = [entry for entry in report["cgroup"].splitlines() if entry.startswith("0::")]
    assert line == ["0::/hamtools/hamtools-test-join"] or line[0].endswith("/hamtools/hamtools-test-join")
    assert open(os.path.join(root, "hamtools", "hamtools-test-join", "cgroup.max.descendants")).read() == "0\n"


def test_cgroup_pids_limit_is_enforced(tmp_path, real_cgroups):
    root, groups, log = real_cgroups
    if "pids" not in open(os.path.join(root, "cgroup.controllers")).read().split():
        print(f"skipped: the pids controller is not available in {root}")
        pytest.skip("no pids controller in cgroup v2 here; tests/test_cgroup_vm.py runs it in a VM")
    out = tmp_path / "forks"
    script = ("import os, sys\nok = 0\nfor _ in range(10):\n    try:\n        pid = os.fork()\n"
              "    except OSError:\n        continue\n    if pid == 0:\n        os._exit(0)\n"
              "    os.waitpid(pid, 0); ok += 1\n"
              "open(sys.argv[1], 'w').write(str(ok))\n")
    # pids.max 1: the service itself and nothing more
    pid = child.start(spec("hamtools-test-pids", [PYTHON, "-c", script, str(out)], cgroup={"pids.max": "1"}),
                      {}, log, cgroups=groups)
    os.waitpid(pid, 0)
    assert out.read_text() == "0"


def test_a_refused_setting_is_logged_and_the_service_still_starts(tmp_path, real_cgroups):
    root, groups, log = real_cgroups
    out = tmp_path / "report"
    pid = child.start(spec("hamtools-test-join", report_argv(out), cgroup={"nonexistent.knob": "1"}),
                      {}, log, cgroups=groups)
    assert wait_report(pid, out)["pid"] == pid
    assert "hamtools-test-join: cgroup nonexistent.knob = 1 refused; left at its default" in log


# -- stopping -----------------------------------------------------------------------------

STUBBORN = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "open(sys.argv[1], 'w').write('ready')\ntime.sleep(600)\n")


def _started(tmp_path, script: str, **keys) -> int:
    ready = tmp_path / "ready"
    pid = child.start(spec("stopme", [PYTHON, "-c", script, str(ready)], **keys), {}, Log())
    wait_for(ready.exists)
    return pid


def _stop(pid, s, loop, **kw) -> list:
    dead: list[float] = []
    stopping = child.stop(pid, s, loop, lambda: dead.append(loop.clock.monotonic()), **kw)
    return dead, stopping


def _gone_or_zombie(ident: proc.ProcessId) -> bool:
    try:
        with open(f"/proc/{ident.pid}/stat") as stat:
            return not ident.alive() or stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_stop_escalates_to_sigkill_after_the_timeout(tmp_path):
    loop = Loop(FakeClock(autojump=0.05))
    pid = _started(tmp_path, STUBBORN)
    begin = loop.clock.monotonic()
    dead, _ = _stop(pid, spec(stop_timeout=30.0), loop)
    assert loop.run_until(lambda: dead, timeout=100)
    assert dead[0] - begin == pytest.approx(30.0, abs=0.5)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    loop.close()


def test_stop_signal_that_works_needs_no_kill(tmp_path):
    loop = Loop(FakeClock(autojump=0.05))
    script = "import sys, time\nopen(sys.argv[1], 'w').write('ready')\ntime.sleep(600)\n"
    pid = _started(tmp_path, script)
    begin = loop.clock.monotonic()
    dead, _ = _stop(pid, spec(stop_signal=signal.SIGINT, stop_timeout=30.0), loop)
    assert loop.run_until(lambda: dead, timeout=100)
    assert dead[0] - begin < 30.0
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) or os.WTERMSIG(status) == signal.SIGINT  # KeyboardInterrupt exit
    loop.close()


def test_stop_reaches_the_whole_group_and_a_stopped_process(tmp_path):
    loop = Loop(FakeClock(autojump=0.05))
    script = ("import os, sys, time\nkid = os.fork()\nif kid == 0:\n    time.sleep(600)\n"
              "open(sys.argv[1] + '.kid', 'w').write(str(kid))\nopen(sys.argv[1], 'w').write('ready')\n"
              "time.sleep(600)\n")
    pid = _started(tmp_path, script)
    kid = int((tmp_path / "ready.kid").read_text())
    kid_id = proc.ProcessId.of(kid)
    os.kill(pid, signal.SIGSTOP)
    begin = loop.clock.monotonic()
    dead, _ = _stop(pid, spec(stop_timeout=30.0), loop)
    assert loop.run_until(lambda: dead, timeout=100)
    assert dead[0] - begin < 30.0
    _, status = os.waitpid(pid, 0)
    assert os.WTERMSIG(status) == signal.SIGTERM  # continued, then terminated
    wait_for(lambda: _gone_or_zombie(kid_id))  # the group's other member too
    loop.close()


def test_stop_never_signals_a_recycled_pid(tmp_path):
    loop = Loop(FakeClock(autojump=0.05))
    pid = _started(tmp_path, STUBBORN)
    start = proc.start_time(pid)
    dead, stopping = _stop(pid, spec(stop_signal=signal.SIGKILL), loop, start=start + 1)
    assert stopping is None
    assert loop.run_until(lambda: dead, timeout=1)
    assert proc.ProcessId(pid, start).alive()  # the process that really has that pid lives on
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    loop.close()


def test_cancelled_stop_does_not_kill_or_report(tmp_path):
    loop = Loop(FakeClock(autojump=0.05))
    pid = _started(tmp_path, STUBBORN)
    dead, stopping = _stop(pid, spec(stop_timeout=5.0), loop)
    stopping.cancel()
    timer = loop.call_later(60, lambda: None)
    loop.run_until(lambda: timer.cancelled, timeout=100)
    assert not dead and proc.start_time(pid) is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    loop.close()
