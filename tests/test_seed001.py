"""Seed 001's watchdog rules on a real ham: a hung worker is killed (its kill signal, then
SIGKILL after its grace period) and restarted once really dead; and the seed's own test, a
process that randomly kills workers, scaled to seconds, keeps a 5-worker system operating."""

import json
import os
import random
import shlex
import signal
import sys
import time

import pytest

from hamtools.ham import ham_status
from tests.conftest import ROOT
from tests.hamfix import HamRunner, entity_status, kill_leftovers, wait_for

HEARTBEAT = f"PYTHONPATH={ROOT} {shlex.quote(sys.executable)} -m hamtools heartbeat"


@pytest.fixture
def board(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(run_dir))
    held = {}

    def start(text: str) -> HamRunner:
        config = tmp_path / "board.toml"
        config.write_text(text)
        held["ham"] = HamRunner(run_dir, [f"--config={config}"]).start()
        return held["ham"]

    yield start
    if "ham" in held:
        try:
            pids = [e["pid"] for e in ham_status()["entities"] if e["pid"]]
        except OSError:
            pids = []
        held["ham"].stop()
        kill_leftovers(pids)


def service(name: str, script: str, **keys) -> str:
    lines = [f"[service.{name}]", f"command = {json.dumps(shlex.join(['/bin/sh', '-c', script]))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n"


def hung_after_a_while(name: str, trap: str = "") -> str:
    """A worker that beats three times, then hangs (still alive, no more beats)."""
    return f"{trap} for i in 1 2 3; do {HEARTBEAT} {name}; sleep 0.1; done; while :; do sleep 0.05; done"


def events(ham: HamRunner, what: str) -> list[dict]:
    return [e for e in ham.events() if e["what"] == what]


def test_a_hung_worker_is_killed_with_its_kill_signal_and_restarted(board):
    ham = board(service("stuck", hung_after_a_while("stuck"), heartbeat="200ms", missed_low=1,
                        missed_high=2, grace="2s", restart="always", backoff_initial="100ms"))
    first = wait_for(lambda: entity_status("stuck")["pid"], what="the first worker")
    wait_for(lambda: (s := entity_status("stuck"))["restarts"] >= 1 and s["pid"] != first,
             timeout=15, what="the restart after the kill")
    assert events(ham, "hung")[0]["note"] == "SIGABRT"
    assert "died abnormally (killed by SIGABRT" in ham.read_log()  # it dumps core, as seed 001 says


def test_a_worker_that_ignores_its_kill_signal_gets_sigkill_after_the_grace(board):
    ham = board(service("deaf", hung_after_a_while("deaf", trap="trap '' ABRT;"), heartbeat="200ms",
                        missed_low=1, missed_high=2, grace="1s", restart="always", backoff_initial="100ms"))
    first = wait_for(lambda: entity_status("deaf")["pid"], what="the first worker")
    wait_for(lambda: events(ham, "hung"), timeout=10, what="the kill")
    hung_at = time.monotonic()
    wait_for(lambda: entity_status("deaf")["pid"] not in (None, first), timeout=15, what="the restart")
    assert time.monotonic() - hung_at > 0.8  # the grace period ran out first
    assert "died (killed by SIGKILL)" in ham.read_log()


def test_a_random_killer_keeps_five_workers_operating(board):
    """Seed 001: "We'll test this with a process that randomly kills a worker process every
    minute or two. We should be able to operate in that situation." — here every 0.2-0.6 s for
    8 s, with heartbeating and plain workers."""
    names = [f"w{n}" for n in range(5)]
    text = ""
    for n, name in enumerate(names):
        if n % 2:
            text += service(name, f"while :; do {HEARTBEAT} {name}; sleep 0.2; done", heartbeat="500ms",
                            missed_low=2, missed_high=4, restart="always", backoff_initial="50ms",
                            max_restarts=1000)
        else:
            text += service(name, "exec sleep 600", restart="always", backoff_initial="50ms", max_restarts=1000)
    board(text)
    wait_for(lambda: all(entity_status(n)["run"] == "running" for n in names), what="the board up")
    chance = random.Random(1)
    kills = 0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        victim = entity_status(chance.choice(names))
        if victim["pid"]:
            os.kill(victim["pid"], signal.SIGKILL)
            kills += 1
        time.sleep(chance.uniform(0.2, 0.6))
    wait_for(lambda: all((s := entity_status(n))["run"] == "running" and s["pid"] for n in names),
             timeout=10, what="every worker running again")
    assert kills >= 12
    statuses = [entity_status(n) for n in names]
    assert sum(s["restarts"] for s in statuses) >= kills
    for status in statuses:  # exactly one process per worker, the one ham knows
        tagged = [p for p in os.listdir("/proc") if p.isdigit() and _tag(int(p)) == status["name"]]
        assert [int(p) for p in tagged if _is_main(int(p))] == [status["pid"]]


def _tag(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            for item in environ.read().split(b"\0"):
                if item.startswith(b"HAM_ENTITY="):
                    return item[11:].decode()
    except OSError:
        return None
    return None


def _is_main(pid: int) -> bool:
    """The worker itself, not the short-lived heartbeat or sleep it runs."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1]) != 0 and _parent_is_not_tagged(pid)
    except OSError:
        return False


def _parent_is_not_tagged(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        parent = int(stat.read().rsplit(")", 1)[1].split()[1])
    return _tag(parent) is None
