"""ham's metrics file for node_exporter's textfile collector, read back with Prometheus' own
text-format parser (prometheus_client): a real ham whose entities die, restart and miss
heartbeats; the hardware watchdog's figures from the real hwdog logic on a fake driver."""

import json
import os
import signal
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hamtools.core.clock import FakeClock
from hamtools.core.loop import Loop
from hamtools.ham import (
    CONDDEATH,
    HREARMAFTERRESTART,
    ND_LOCAL_NODE,
    ham_action_restart,
    ham_attach,
    ham_condition,
    ham_entity,
    ham_status,
    ham_stop,
)
from hamtools.hamd import hwdog, metrics
from hamtools.hamd.model import GLOBAL, Entity
from tests.hamfix import HamRunner, entity_status, kill_leftovers, wait_for
from tests.test_ham import send, start_client
from tests.wdt_fakes import FakeDriver

ODD = 'odd "name" \\ here'  # an entity name with every character the format escapes but newline


def parse(text: str) -> dict:
    """{(sample name, frozen labels): value}, and every family's type, as Prometheus reads them."""
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {"samples": samples, "types": types}


def value(parsed: dict, name: str, **labels):
    return parsed["samples"].get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def metered(tmp_path, monkeypatch):
    """A real ham writing tmp/ham.prom, started over the state an earlier ham left: two ham
    failures counted (what the guardian's takeovers add up)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(json.dumps({"model": {"schema": 1, "entities": []},
                                                "ham": {"ham_failures": 2}}))
    prom = tmp_path / "ham.prom"
    runner = HamRunner(run, extra_args=["--metrics-file", str(prom)]).start()
    monkeypatch.setenv("HAM_RUNTIME_DIR", runner.dir)
    runner.prom = prom
    yield runner
    pids = [e["pid"] for e in entity_statuses() if e["pid"]]
    runner.stop()
    kill_leftovers(pids)


def entity_statuses():
    try:
        return ham_status()["entities"]
    except OSError:  # ham is gone already
        return []


def read(prom) -> dict:
    return parse(prom.read_text())


def test_deaths_restarts_up_and_ham_failures_reach_the_file(metered):
    ehdl = ham_attach(ODD, ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    ham_action_restart(death, "restart", "/bin/sleep 601", HREARMAFTERRESTART)
    ham_entity("later", ND_LOCAL_NODE, 0)  # a placeholder: never up
    first = wait_for(lambda: (entity_status(ODD) or {}).get("pid"))
    now = wait_for(lambda: (m := read(metered.prom)) and value(m, "ham_entity_up", entity=ODD) == 1 and m)
    assert value(now, "ham_entity_up", entity="later") == 0
    assert value(now, "ham_entity_deaths_total", entity=ODD) == 0
    assert value(now, "ham_failures_total") == 2
    assert now["types"]["ham_failures"] == "counter" and now["types"]["ham_entity_up"] == "gauge"
    assert value(now, "ham_build_info", version="0.1.0") == 1

    os.kill(first, signal.SIGKILL)
    after = wait_for(lambda: (m := read(metered.prom)) and value(m, "ham_entity_restarts_total", entity=ODD) == 1
                     and m, what="the restart in the metrics")
    assert value(after, "ham_entity_deaths_total", entity=ODD) == 1
    assert value(after, "ham_entity_up", entity=ODD) == 1
    assert entity_status(ODD)["pid"] not in (None, first)
    assert value(after, "ham_start_time_seconds") == pytest.approx(ham_status()["started"])
    assert not [n for n in os.listdir(metered.prom.parent) if n.endswith(".tmp")]  # renamed into place


def test_missed_heartbeats_are_counted_once_per_episode_and_beats_cost_no_write(metered):
    client = start_client(metered, "worker", period=0.2, hpdl=1, hpdh=2)
    try:
        wait_for(lambda: value(read(metered.prom), "ham_entity_up", entity="worker") == 1)
        written = os.stat(metered.prom)
        send(client, "beat 8", "beaten")  # 0.8 s of beats on time: nothing changes, nothing written
        assert os.stat(metered.prom).st_ino == written.st_ino
        missed = wait_for(lambda: (m := read(metered.prom))
                          and value(m, "ham_entity_heartbeat_misses_total", entity="worker", severity="high") == 1
                          and m, what="MISSEDHIGH in the metrics")
        assert value(missed, "ham_entity_heartbeat_misses_total", entity="worker", severity="low") == 1
        assert missed["types"]["ham_entity_heartbeat_misses"] == "counter"
        send(client, "beat 1", "beaten")  # a beat does not end the episode (heartbeat_healthy does)
        assert entity_status("worker")["heartbeat"]["missed_low"] == 1
    finally:
        send(client, "exit")
        client.wait(5)
    gone = wait_for(lambda: (m := read(metered.prom)) and value(m, "ham_entity_up", entity="worker") is None
                    and m, what="the detached worker to leave the metrics")
    assert value(gone, "ham_failures_total") == 2


def test_counters_survive_a_new_ham(metered):
    ehdl = ham_attach("db", ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    ham_action_restart(ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART), "restart",
                       "/bin/sleep 600", HREARMAFTERRESTART)
    os.kill(wait_for(lambda: (entity_status("db") or {}).get("pid")), signal.SIGKILL)
    wait_for(lambda: value(read(metered.prom), "ham_entity_restarts_total", entity="db") == 1)
    ham_stop()
    metered.proc.wait(10)
    metered.prom.unlink()
    metered.start()
    again = wait_for(lambda: metered.prom.exists() and read(metered.prom))
    assert value(again, "ham_entity_restarts_total", entity="db") == 1  # persisted with the entity
    assert value(again, "ham_entity_deaths_total", entity="db") == 1


def test_a_directory_that_is_not_there_is_refused_before_anything_starts(tmp_path):
    runner = HamRunner(tmp_path / "run", extra_args=["--metrics-file", str(tmp_path / "no" / "ham.prom")])
    done = subprocess.run([sys.executable, "-m", "hamtools", "ham", "--foreground", "--runtime-dir", runner.dir,
                           *runner.extra_args], env=runner.env(), capture_output=True, text=True,
                          check=False)
    expected = f"ham: --metrics-file {tmp_path}/no/ham.prom: {tmp_path}/no is not a directory\n"
    assert (done.returncode, done.stderr) == (2, expected)
    assert not (tmp_path / "run").exists()


# ---- the hardware watchdog's figures: the real hwdog logic over a fake driver ---------------

def watchdog_text(dog) -> str:
    return metrics.render([], started=0.0, ham_failures=0, watchdog=dog.status())


def test_watchdog_feeding_pending_kills_and_the_last_reset(tmp_path, monkeypatch):
    monkeypatch.setattr(hwdog.bootid, "boot_id", lambda: "boot-2")
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"culprit": "stuck", "pid": 77, "boot_id": "boot-1"}))
    loop = Loop(FakeClock(autojump=True))
    try:
        device = FakeDriver(tmp_path, timeout=30).open("/dev/watchdog0")
        dog = hwdog.HardwareWatchdog(loop, lambda level, text: None, device, record=str(record))
        fed = parse(watchdog_text(dog))
        assert value(fed, "ham_watchdog_feeding") == 1 and value(fed, "ham_watchdog_pending_kills") == 0
        assert value(fed, "ham_watchdog_timeout_seconds") == 30
        assert value(fed, "ham_watchdog_last_boot_reset", entity="stuck") == 1
        dog.kill_pending("worker", True, pid=4242)
        starving = parse(watchdog_text(dog))
        assert value(starving, "ham_watchdog_feeding") == 0 and value(starving, "ham_watchdog_pending_kills") == 1
    finally:
        loop.close()
    monkeypatch.setattr(hwdog.bootid, "boot_id", lambda: "boot-3")  # a boot that no reset brought
    (tmp_path / "record.json").unlink()
    loop = Loop(FakeClock(autojump=True))
    try:
        device = FakeDriver(tmp_path, timeout=30).open("/dev/watchdog0")
        calm = hwdog.HardwareWatchdog(loop, lambda level, text: None, device, record=str(record))
        assert value(parse(watchdog_text(calm)), "ham_watchdog_last_boot_reset") == 0
    finally:
        loop.close()


def test_label_values_are_escaped_as_the_format_says():
    entities = [Entity(GLOBAL, "global"), Entity('a\\b"c', "attached", run="dead", deaths=3, restarts=2),
                Entity("later", "placeholder")]
    parsed = parse(metrics.render(entities, started=1.5, ham_failures=0, watchdog=None))
    assert value(parsed, "ham_entity_deaths_total", entity='a\\b"c') == 3
    assert value(parsed, "ham_entity_up", entity='a\\b"c') == 0
    assert value(parsed, "ham_entity_up", entity="later") == 0  # a placeholder has no process yet
    assert value(parsed, "ham_entity_up", entity=GLOBAL) is None  # nor has the global entity
