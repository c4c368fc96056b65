"""Helpers for the service-process tests: a full spec, a child that reports on itself, a user."""

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

# Debian's interpreter: the image's default one lives in root's 0700 home, out of reach of a
# second uid (linux_primitives.md #7).
PYTHON = "/usr/bin/python3"

# Writes what the process sees of itself, as JSON, to argv[1] (atomically).
REPORT = r"""
import json, os, resource, sys
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
umask = os.umask(0)
os.umask(umask)
report = {
    "pid": os.getpid(), "pgid": os.getpgid(0), "uid": os.getuid(), "euid": os.geteuid(),
    "gid": os.getgid(), "egid": os.getegid(), "groups": sorted(os.getgroups()),
    "cwd": os.getcwd(), "umask": umask,
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "core": resource.getrlimit(resource.RLIMIT_CORE),
    "nice": os.nice(0), "policy": os.sched_getscheduler(0),
    "priority": os.sched_getparam(0).sched_priority, "cpus": sorted(os.sched_getaffinity(0)),
    "env": dict(os.environ), "cgroup": open("/proc/self/cgroup").read(),
    "sigblk": status("SigBlk"), "sigign": status("SigIgn"),
    "fd1": os.readlink("/proc/self/fd/1"), "fd2": os.readlink("/proc/self/fd/2"),
}
with open(sys.argv[1] + ".tmp", "w") as out:
    json.dump(report, out)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
"""


def spec(name: str = "svc", argv=None, **keys) -> dict:
    """A validated spec as hamtools.hamd.service makes it: every key, defaults unless given."""
    base = {"name": name, "argv": argv or ["/bin/true"], "env": {}, "uid": None, "gid": None,
            "cwd": None, "umask": None, "rlimits": {}, "nice": None, "sched": None, "cpus": None,
            "cgroup": None, "stdout": "inherit", "stderr": "inherit", "log_max_bytes": 1048576,
            "log_keep": 3, "stop_signal": signal.SIGTERM, "stop_timeout": 10.0}
    base.update(keys)
    return base


def report_argv(path) -> list[str]:
    return [PYTHON, "-c", REPORT, str(path)]


def wait_report(pid: int, path) -> dict:
    """Reap the reporting child and return its report."""
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"reporter exited {status:#x}"
    return json.loads(open(path).read())


def wait_for(predicate, timeout: float = 10.0) -> None:
    """Wait for a real process to get somewhere (not timing logic: it just takes real time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def need_root() -> None:
    if os.geteuid() != 0:
        print("skipped: needs root (a second uid, supplementary groups, negative nice)")
        pytest.skip("needs root")


def system_user(name: str, extra_group: str | None = None) -> pwd.struct_passwd:
    """A system user (made if missing), optionally also in extra_group (made if missing)."""
    need_root()
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", name], check=True)
    if extra_group is not None:
        try:
            grp.getgrnam(extra_group)
        except KeyError:
            subprocess.run(["groupadd", "--system", extra_group], check=True)
        subprocess.run(["usermod", "-a", "-G", extra_group, name], check=True)
    return pwd.getpwnam(name)


@pytest.fixture
def open_dir():
    """A directory another uid may write its report into (pytest's tmp is root's, 0700)."""
    where = tempfile.mkdtemp(prefix="hamtools-child-")
    os.chmod(where, 0o1777)
    yield where
    shutil.rmtree(where, ignore_errors=True)
