"""ham's service manager with real processes: start order and readiness, policy restarts with
backoff and limits, safe mode, group strategies, reload by diff, reverse-order shutdown.
The specs are the canonical dicts (tests/services_runner.py feeds them to a real ham)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hamtools.ham import (Handle, ham_entity_remove, ham_group_set, ham_reload, ham_service_control,
                          ham_status, ham_stop)
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

    def start(self, specs, groups=None, prefix=()):
        """A ham running specs; prefix: a command to run it under (setpriv ...)."""
        self.write(specs, groups)
        env = dict(os.environ, PYTHONPATH=str(ROOT), HAM_RUNTIME_DIR=str(self.dir))
        self.proc = subprocess.Popen([*prefix, sys.executable, str(ROOT / "tests" / "services_runner.py"),
                                      str(self.dir), str(self.config)], env=env)
        wait_for(lambda: (self.dir / "client").exists(), what="ham")
        return self

    def restart(self, specs, groups=None):
        """Stop ham, leaving its entities running (hamctl stop), and start a new one."""
        ham_stop()
        self.proc.wait(15)
        wait_for(lambda: not (self.dir / "client").exists(), what="ham gone")
        return self.start(specs, groups)

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


# ---- what ham wants vs what a service is ---------------------------------------------------

def flapper():
    """A service that becomes ready again every 0.3 s: each time, ham looks for services owed
    a start (the moment a service ham should leave alone would come back)."""
    return spec("flapper", "sleep 0.3; exit 1", max_restarts=1000, backoff_initial=0.0, backoff_factor=1.0)


def lives(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("mode", ["on-failure", "never"])
def test_a_clean_exit_stays_stopped_while_others_become_ready(board, tmp_path, mode):
    record = tmp_path / "lives"
    board.start([spec("done", f"echo life >> {record}; exit 0", restart=mode), flapper()])
    wait_for(lambda: (s := entity_status("done")) and s["run"] == "stopped" and lives(record), what="done")
    wait_for(lambda: entity_status("flapper")["restarts"] >= 4, what="flapper restarting")
    done = entity_status("done")
    assert (lives(record), done["restarts"], done["want"]) == (["life"], 0, "down")


def test_hamctl_stop_sticks_while_another_service_flaps_and_across_a_restart_of_ham(board):
    specs = [spec("calm", "exec sleep 600"), flapper()]
    board.start(specs)
    pid_running("calm")
    assert ham_service_control("calm", "stop")["name"] == "calm"
    wait_for(lambda: entity_status("calm")["run"] == "stopped", what="calm stopped")
    flaps = entity_status("flapper")["restarts"]
    wait_for(lambda: entity_status("flapper")["restarts"] >= flaps + 4, what="flapper restarting")
    calm = entity_status("calm")
    assert (calm["run"], calm["pid"], calm["want"]) == ("stopped", None, "down")
    board.restart(specs)  # what ham wants is saved with the entity
    wait_for(lambda: entity_status("flapper")["restarts"] >= flaps + 6, what="flapper restarting")
    assert entity_status("calm")["pid"] is None
    ham_service_control("calm", "start")
    assert pid_running("calm") and entity_status("calm")["want"] == "up"


def test_a_stopping_service_is_reported_running_until_it_is_gone(board):
    slow = 'trap "sleep 1; exit 0" TERM; while :; do sleep 0.05; done'
    board.start([spec("slow", slow)])
    pid_running("slow")
    ham_service_control("slow", "stop")
    seen = []
    wait_for(lambda: seen.append((s := entity_status("slow"))["run"]) or s["run"] == "stopped",
             what="slow stopped")
    assert set(seen) <= {"running", "starting", "backoff", "stopped", "dead", "failed"}  # SPEC §10
    assert seen[0] == "running" and seen.count("running") > 5  # a second of "running" while it stops


# ---- the policy's memory across a restart of ham -----------------------------------------

def test_a_backoff_goes_on_across_a_restart_of_ham_with_the_history(board, tmp_path):
    record = tmp_path / "starts"
    specs = [spec("slow", f"date +%s.%N >> {record}; exit 1", backoff_initial=3.0, max_restarts=100)]
    board.start(specs)  # the first death restarts at once, the second waits 3 s
    wait_for(lambda: len(lives(record)) == 2 and entity_status("slow")["run"] == "backoff", what="backoff")
    old = board.proc.pid
    board.restart(specs)
    assert board.proc.pid != old and entity_status("slow")["run"] == "backoff"  # not lost, not early
    wait_for(lambda: len(lives(record)) >= 3, timeout=10, what="the third start")
    first, second, third = (float(t) for t in lives(record)[:3])
    assert 2.8 <= third - second <= 4.5  # the rest of the same 3 s, across the new ham
    # the history came along: the next death waits 3 x 2 s (a fresh one would restart at once)
    wait_for(lambda: "slow: restart in 6 s (backoff)" in board.log(), what="the doubled backoff")


def test_a_death_while_no_ham_watched_gets_its_policy(board):
    specs = [spec("svc", "exec sleep 600")]
    board.start(specs)
    pid = pid_running("svc")
    ham_stop()
    board.proc.wait(15)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="the process gone, zombie and all")
    board.start(specs)
    assert pid_running("svc", pid) != pid
    assert entity_status("svc")["restarts"] == 1
    assert "svc (pid %d) died while no ham watched it" % pid in board.log()


# ---- at the restart limit ------------------------------------------------------------------

def limited(record, on_limit, **more):
    return spec("fragile", f"echo life >> {record}; exit 1", max_restarts=1, on_limit=on_limit, **more)


def test_on_limit_log_stays_failed_and_a_reload_or_hamctl_start_brings_it_back(board, tmp_path):
    record = tmp_path / "lives"
    board.start([limited(record, "log")])
    wait_for(lambda: entity_status("fragile")["run"] == "failed", what="failed")
    assert lives(record) == ["life"] * 2 and entity_status("fragile")["want"] == "up"
    time.sleep(0.3)
    assert len(lives(record)) == 2  # failed: nothing restarts it by itself
    ham_reload()
    wait_for(lambda: len(lives(record)) == 4 and entity_status("fragile")["run"] == "failed", what="retried")
    ham_service_control("fragile", "start")
    wait_for(lambda: len(lives(record)) == 6 and entity_status("fragile")["run"] == "failed", what="again")


def test_on_limit_stop_wants_it_down_until_hamctl_start(board, tmp_path):
    record = tmp_path / "lives"
    board.start([limited(record, "stop")])
    wait_for(lambda: entity_status("fragile")["run"] == "failed", what="failed")
    assert entity_status("fragile")["want"] == "down"
    ham_reload()  # unlike log, a reload leaves it alone
    time.sleep(0.5)
    assert len(lives(record)) == 2
    ham_service_control("fragile", "start")
    wait_for(lambda: len(lives(record)) == 4 and entity_status("fragile")["run"] == "failed", what="again")


def test_on_limit_escalate_restarts_the_group(board, tmp_path):
    record = tmp_path / "lives"
    board.start([spec("partner", "exec sleep 600", group="g"), limited(record, "escalate", group="g")])
    partner = pid_running("partner")
    wait_for(lambda: entity_status("partner")["pid"] not in (None, partner), what="partner restarted")
    # cascade: one member failing alone restarts only itself; the escalation restarted both
    assert "fragile: escalating to group g: restarting partner, fragile" in board.log()
    wait_for(lambda: len(lives(record)) >= 3, what="fragile restarted too")


def test_stopping_a_service_whose_exit_was_seen_already_completes_at_once():
    """Found by test_on_limit_escalate_restarts_the_group (once the control socket was served
    first in a turn): a service died after ham_stop was asked and before the stop began;
    while ham stops a death is not handled, so the entity kept the dead pid, and the stop
    waited for an exit that had come and gone: ham never ended."""
    from hamtools.core import proc
    from hamtools.hamd.model import Entity
    from tests.hamfix import in_process_ham

    gone = subprocess.Popen(["sleep", "0.01"])
    start = proc.start_time(gone.pid)
    gone.wait()  # reaped: as ham had reaped it
    with in_process_ham() as ham:
        entity = ham.model.add_entity(Entity("gone", argv=["sleep", "0.01"], pid=gone.pid, start=start))
        done = []
        ham.services.stop(entity, then=lambda: done.append(entity.run))
        assert done == ["stopped"] and entity.pid is None and not ham.services.stopping


def test_on_limit_reboot_refused_leaves_ham_running_and_the_service_failed(board, tmp_path):
    go, record = tmp_path / "go", tmp_path / "lives"
    fragile = spec("fragile", f"while [ ! -e {go} ]; do sleep 0.05; done; echo life >> {record}; exit 1",
                   max_restarts=0, on_limit="reboot")
    # Without CAP_SYS_BOOT the kernel refuses reboot(2): with it, this machine (or the
    # container's PID namespace) would really go down, so that is checked before anything dies.
    board.start([fragile], prefix=["setpriv", "--inh-caps=-sys_boot", "--bounding-set=-sys_boot"])
    caps = {line.split(":")[0]: int(line.split()[1], 16)
            for line in open(f"/proc/{board.proc.pid}/status") if line.startswith("Cap")}
    assert not (caps["CapEff"] | caps["CapPrm"] | caps["CapBnd"]) & (1 << 22)  # CAP_SYS_BOOT
    pid_running("fragile")
    go.touch()
    wait_for(lambda: "reboot refused" in board.log(), what="the refusal")
    assert "fragile: reboot refused (Operation not permitted): it stays failed" in board.log()
    assert board.proc.poll() is None and entity_status("fragile")["run"] == "failed"
    events = [json.loads(line) for line in (board.dir / "events.jsonl").read_text().splitlines()]
    assert any(e["what"] == "reboot refused" and e["entity"] == "fragile" for e in events)


# ---- groups, in start order ------------------------------------------------------------------

def test_rest_for_one_spares_the_members_started_before_the_failed_one(board):
    board.start([spec(n, "exec sleep 600", group="g") for n in ("a", "b", "c")],
                {"g": {"strategy": "rest_for_one", "window": 60.0, "source": "test:2"}})
    a, b, c = (pid_running(n) for n in ("a", "b", "c"))
    os.kill(b, signal.SIGKILL)
    assert pid_running("b", b) != b and pid_running("c", c) != c
    time.sleep(0.3)
    assert entity_status("a")["pid"] == a and entity_status("a")["restarts"] == 0


def test_a_group_restart_waits_for_the_predecessor_in_backoff_and_its_readiness(board, tmp_path):
    state, seen = tmp_path / "flaky.state", tmp_path / "seen"
    flaky = spec("flaky", f"echo up > {state}; sleep 2; echo down > {state}; exit 1",
                 group="chain", max_restarts=100, backoff_initial=1.5, backoff_factor=1.0, ready="delay:0.5")
    follower = spec("follower", f"cat {state} >> {seen}; exec sleep 600", group="chain", after=["flaky"])
    board.start([flaky, follower], {"chain": {"strategy": "rest_for_one", "window": 60.0, "source": "test:3"}})
    # flaky's first death restarts it at once, the second after 1.5 s: follower waits for both
    wait_for(lambda: len(lives(seen)) >= 3, timeout=20, what="follower restarted twice")
    assert lives(seen)[:3] == ["up"] * 3  # never started while flaky was down
    starts = started_at(board)
    for when in starts["follower"]:  # and each time only once flaky was ready (delay:0.5)
        assert when - max(t for t in starts["flaky"] if t < when) >= 0.5, board.log()
    assert "flaky: restart in 1.5 s (backoff)" in board.log()


def started_at(board) -> dict[str, list[float]]:
    """When ham started each service, by its own log's clock (seconds since ham started)."""
    starts: dict[str, list[float]] = {}
    for line in board.log().splitlines():
        stamp, _, message = line.partition("s: Ham: Started service ")
        if message:
            starts.setdefault(message.split()[0], []).append(float(stamp))
    return starts


# ---- readiness and backoff on a running ham ----------------------------------------------

def test_delay_readiness_holds_the_next_service(board):
    board.start([spec("db", "exec sleep 600", ready="delay:1"),
                 spec("web", "exec sleep 600", after=["db"])])
    pid_running("db")
    time.sleep(0.5)
    assert entity_status("web")["run"] == "stopped" and entity_status("db")["ready"] is False
    pid_running("web")
    starts = started_at(board)
    assert 1.0 <= starts["web"][0] - starts["db"][0] <= 2.5


def test_backoff_resets_after_healthy_uptime(board, tmp_path):
    count = tmp_path / "count"
    # lives 1-3 die at once; life 4 lives 1.5 s, longer than reset_after; then at once again
    script = (f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}; "
              'if [ $n -eq 4 ]; then sleep 1.5; fi; exit 1')
    board.start([spec("svc", script, backoff_initial=0.2, reset_after=1.0, max_restarts=100)])
    wait_for(lambda: count.exists() and int(count.read_text() or 0) >= 6, timeout=15, what="six lives")
    events = [json.loads(line) for line in (board.dir / "events.jsonl").read_text().splitlines()]
    delays = [e["delay"] for e in events if e["what"] == "policy"][:5]
    assert delays == [0.0, 0.2, 0.4, 0.0, 0.2]  # the healthy fourth life forgave the streak


def test_a_group_strategy_set_through_the_api_applies_and_a_reload_brings_back_the_file(board):
    specs = [spec("a", "exec sleep 600", group="g"), spec("b", "exec sleep 600", group="g")]
    board.start(specs, {"g": {"strategy": "cascade", "window": 60.0, "source": "test:2"}})
    a, b = pid_running("a"), pid_running("b")
    assert ham_group_set("g", strategy="one_for_all", window="30s") == {"strategy": "one_for_all", "window": 30.0}
    os.kill(a, signal.SIGKILL)  # alone, under cascade, a would restart by itself
    assert pid_running("b", b) != b
    with pytest.raises(OSError) as bad:
        ham_group_set("g", strategy="all")
    assert bad.value.errno == errno.EINVAL and "strategy: must be cascade" in bad.value.strerror
    with pytest.raises(OSError) as unknown:
        ham_group_set("nope", strategy="cascade")
    assert unknown.value.errno == errno.EINVAL
    ham_reload()
    assert ham_status()["groups"]["g"]["strategy"] == "cascade"  # the file's, again


def test_a_file_service_is_not_removed_behind_its_file(board):
    board.start([spec("svc", "exec sleep 600")])
    pid = pid_running("svc")
    with pytest.raises(OSError) as refused:
        ham_entity_remove(Handle("svc"))
    assert refused.value.errno == errno.EINVAL and "remove it there and reload" in refused.value.strerror
    assert entity_status("svc")["pid"] == pid
