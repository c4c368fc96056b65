"""A real ham per test, in a private runtime directory, and helpers to watch what it does."""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT


class HamRunner:
    def __init__(self, runtime_dir, extra_args=()):
        self.dir = str(runtime_dir)
        self.log = os.path.join(self.dir, "ham.log")
        self.extra_args = list(extra_args)
        self.extra_env = {}  # more of ham's environment
        self.prefix = []  # a command that execs ham (prlimit ...): the pid stays ham's
        self.proc = None

    def env(self, **more) -> dict:
        return dict(os.environ, PYTHONPATH=str(ROOT), HAM_RUNTIME_DIR=self.dir, **self.extra_env, **more)

    def start(self, verbosity: str | None = "4") -> "HamRunner":
        """verbosity None: no -V, so ham keeps what its state file says."""
        level = ["-V", verbosity] if verbosity is not None else []
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "hamtools", "ham", "--foreground", *level, "-f", self.log,
             "--runtime-dir", self.dir, *self.extra_args], env=self.env(), cwd=ROOT)
        deadline = time.monotonic() + 10
        while not self.answers():  # a socket file alone may be a killed ham's
            assert self.proc.poll() is None, f"ham exited {self.proc.returncode}: {self.read_log()}"
            assert time.monotonic() < deadline, "ham did not come up"
            time.sleep(0.01)
        return self

    def answers(self) -> bool:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            probe.connect(os.path.join(self.dir, "client"))
            return True
        except OSError:
            return False
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stop_successor()

    def stop_and_kill_leftovers(self, spawned=()) -> None:
        """stop(), then kill what the entities still ran (and spawned: pids a test knows of)."""
        from hamtools.ham import ham_status

        try:
            pids = {e["pid"] for e in ham_status()["entities"] if e["pid"]}
        except OSError:
            pids = set()
        self.stop()
        kill_leftovers(pids | set(spawned))

    def stop_successor(self) -> None:
        """A ham that took over (its guardian) when the one we started was killed: stop it
        the way hamctl does (guardian first), and wait until the lock is free."""
        if not self.answers():
            return
        subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "stop"], env=self.env(), cwd=ROOT,
                       capture_output=True, timeout=30)

    def read_log(self) -> str:
        try:
            with open(self.log) as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def events(self) -> list[dict]:
        with open(os.path.join(self.dir, "events.jsonl")) as journal:
            return [json.loads(line) for line in journal]

    def python(self, code: str, *args, **kw) -> subprocess.Popen:
        """A client process with hamtools importable and this ham's runtime dir."""
        return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=self.env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(predicate, timeout=10.0, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def entity_status(name):
    from hamtools.ham import ham_status

    return next((e for e in ham_status()["entities"] if e["name"] == name), None)


def kill_leftovers(pids):
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def ham(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "run", exist_ok=True)
    runner = HamRunner(tmp_path / "run").start()
    monkeypatch.setenv("HAM_RUNTIME_DIR", runner.dir)
    spawned = set()
    runner.spawned = spawned
    yield runner
    runner.stop_and_kill_leftovers(spawned)


@contextmanager
def in_process_ham(clock=None):
    """A real Ham in this process on a private runtime directory, not started (no sockets, no
    loop running): for what needs its parts one call at a time (request handling, notify
    parsing, the server's reading), run on its loop by the caller; clock: a FakeClock, or the
    real one."""
    from hamtools.core.clock import REAL
    from hamtools.core.loop import Loop
    from hamtools.hamd.daemon import Ham
    from hamtools.hamd.hlog import HamLog

    clock = clock or REAL
    with tempfile.TemporaryDirectory(prefix="ham-inproc.") as where:
        loop = Loop(clock)
        ham = Ham(loop, where, HamLog(clock, verbosity=4, path=os.path.join(where, "ham.log")))
        try:
            yield ham
        finally:
            ham.close()
            loop.close()
