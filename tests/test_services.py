"""ham's service manager with real processes: start order and readiness, policy restarts with
backoff and limits, safe mode, group strategies, reload by diff, reverse-order shutdown.
The specs are the canonical dicts (tests/services_runner.py feeds them to a real ham)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hamtools.ham import ham_stop
from tests.conftest import ROOT
from tests.hamfix import entity_status, kill_leftovers, wait_for

DEFAULTS = {
    "env": {}, "uid": None, "gid": None, "cwd": None, "umask": None, "rlimits": {}, "nice": None,
    "sched": None, "cpus": None, "cgroup": None, "stdout": "inherit", "stderr": "inherit",
    "log_max_bytes": 1048576, "log_keep": 3, "stop_signal": signal.SIGTERM, "stop_timeout": 2.0,
    "kill_signal": signal.SIGABRT, "grace": 5.0, "restart": "always", "max_restarts": 5,
    "restart_window": 60.0, "backoff_initial": 0.1, "backoff_max": 30.0, "backoff_factor": 2.0,
    "reset_after": 60.0, "on_limit": "log", "on_limit_command": None, "group": None,
    "safe_after": 0.0, "safe_arg": None, "heartbeat": 0.0, "missed_low": 1, "missed_high": 3,
    "after": [], "ready": "none", "conditions": [], "source": "test:1",
}


def spec(name, command, **changes):
    return {**DEFAULTS, "name": name, "argv": ["/bin/sh", "-c", command, name], **changes}


class Board:
    def __init__(self, tmp_path):
        self.dir = tmp_path / "run"
        self.dir.mkdir()
        self.config = tmp_path / "specs.json"
        self.proc = None

    def write(self, specs, groups=None):
        self.config.write_text(json.dumps({"specs": specs, "groups": groups or {}}))

    def start(self, specs, groups=None):
        self.write(specs, groups)
        env = dict(os.environ, PYTHONPATH=str(ROOT), HAM_RUNTIME_DIR=str(self.dir))
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "services_runner.py"),
                                      str(self.dir), str(self.config)], env=env)
        wait_for(lambda: (self.dir / "client").exists(), what="ham")
        return self

    def log(self) -> str:
        return (self.dir / "ham.log").read_text()


@pytest.fixture
def board(tmp_path, monkeypatch):
    made = Board(tmp_path)
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(made.dir))
    yield made
    pids = []
    try:
        from hamtools.ham import ham_status

        pids = [e["pid"] for e in ham_status()["entities"] if e["pid"]]
        ham_stop(stop_entities=True)
        made.proc.wait(15)
    except OSError:
        pass
    finally:
        if made.proc and made.proc.poll() is None:
            made.proc.kill()
        kill_leftovers(pids)


def pid_running(name, other_than=None):
    return wait_for(lambda: (s := entity_status(name)) and s["run"] == "running"
                    and s["pid"] not in (None, other_than) and s["pid"], what=f"{name} running")


def test_start_order_waits_for_readiness(board, tmp_path):
    flag = tmp_path / "db.ready"
    board.start([spec("web", "exec sleep 600", after=["db"]),
                 spec("db", "exec sleep 600", ready=f"path:{flag}")])
    pid_running("db")
    time.sleep(0.3)
    assert entity_status("web")["run"] == "stopped"  # db is up, not ready
    flag.touch()
    pid_running("web")


def test_backoff_then_the_limit_runs_its_action(board, tmp_path):
    marker = tmp_path / "gave-up"
    board.start([spec("flaky", "exit 3", max_restarts=3, backoff_initial=0.2,
                      on_limit="exec", on_limit_command=f"touch {marker}")])
    wait_for(marker.exists, timeout=15, what="the on_limit command")
    status = entity_status("flaky")
    assert status["run"] == "failed" and status["restarts"] == 3
    log = board.log()
    assert "flaky: restart in 0.2 s (backoff)" in log and "flaky: restart in 0.4 s (backoff)" in log
    assert "restart limit reached (3 restarts in 60 s): exec" in log


@pytest.mark.parametrize("mode,command,expected", [
    ("never", "exit 1", "dead"), ("on-failure", "exit 0", "stopped"), ("always", "exit 0", None),
])
def test_restart_modes(board, mode, command, expected):
    board.start([spec("svc", f"sleep 0.3; {command}", restart=mode)])
    if expected is None:
        wait_for(lambda: entity_status("svc")["restarts"] >= 1, what="a restart")
    else:
        wait_for(lambda: entity_status("svc")["run"] == expected, what=expected)
        time.sleep(0.5)
        assert entity_status("svc")["restarts"] == 0


def test_safe_mode_after_a_short_life(board, tmp_path):
    record = tmp_path / "lives"
    board.start([spec("worker", f'echo "$HAM_SAFE_MODE:$HAM_PREV_UPTIME:$*" >> {record}; sleep 0.2; exit 1',
                      safe_after=60.0, safe_arg="--safe", max_restarts=1)])
    wait_for(lambda: record.exists() and len(record.read_text().splitlines()) >= 2, what="two lives")
    first, second = record.read_text().splitlines()[:2]
    assert first == "::" and second == "1:0:--safe"


def test_one_for_all_restarts_the_group(board):
    board.start([spec("a", "exec sleep 600", group="g"), spec("b", "exec sleep 600", group="g")],
                {"g": {"strategy": "one_for_all", "window": 60.0, "source": "test:2"}})
    a, b = pid_running("a"), pid_running("b")
    os.kill(a, signal.SIGKILL)
    assert pid_running("a", a) != a and pid_running("b", b) != b


def test_cascade_restarts_all_only_on_a_second_failure(board):
    board.start([spec(n, "exec sleep 600", group="g") for n in ("a", "b", "c")])
    a, b, c = (pid_running(n) for n in ("a", "b", "c"))
    os.kill(a, signal.SIGKILL)
    a2 = pid_running("a", a)
    time.sleep(0.3)
    assert entity_status("c")["pid"] == c  # one failure: only a restarts
    os.kill(b, signal.SIGKILL)
    assert pid_running("c", c) != c and pid_running("a", a2) != a2


def test_reload_keeps_unchanged_entities(board):
    board.start([spec("keep", "exec sleep 600"), spec("change", "exec sleep 600"), spec("drop", "exec sleep 600")])
    keep, change, drop = (pid_running(n) for n in ("keep", "change", "drop"))
    board.write([spec("keep", "exec sleep 600"), spec("change", "exec sleep 601"), spec("new", "exec sleep 600")])
    board.proc.send_signal(signal.SIGHUP)
    pid_running("new")
    assert pid_running("change", change) != change
    wait_for(lambda: entity_status("drop") is None, what="drop removed")
    assert entity_status("keep")["pid"] == keep
    with pytest.raises(ProcessLookupError):
        wait_for(lambda: os.kill(drop, 0), timeout=3)


def test_a_bad_reload_changes_nothing(board):
    board.start([spec("keep", "exec sleep 600")])
    keep = pid_running("keep")
    board.config.write_text("{ not json")
    board.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in board.log(), what="the refusal")
    assert entity_status("keep")["pid"] == keep


def test_shutdown_goes_in_reverse_start_order(board, tmp_path):
    record = tmp_path / "stopped"
    trap = f'trap "echo {{}} >> {record}; exit 0" TERM; while :; do sleep 0.05; done'
    board.start([spec("first", trap.format("first")), spec("second", trap.format("second"), after=["first"]),
                 spec("third", trap.format("third"), after=["second"])])
    pid_running("third")
    ham_stop(stop_entities=True)
    board.proc.wait(15)
    assert record.read_text().split() == ["third", "second", "first"]
