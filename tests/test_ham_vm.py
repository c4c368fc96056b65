"""ham holding a real hardware watchdog (i6300esb in QEMU, scripts/vm-test): it feeds it, stops
feeding while a hung worker that cannot be killed is being killed so the board resets, names
that worker after the reset (in `hamctl status` and the metrics file), leaves it armed with the
shutdown timeout on SIGTERM, and disarms it on `hamctl stop`. The guest half is tests/ham_vm_guest.py."""

import json
import subprocess

import pytest

from tests.conftest import ROOT
from tests.test_metrics import parse, value
from tests.test_wdt_vm import skip_or_fail, unavailable


@pytest.fixture(scope="module")
def run(request, tmp_path_factory):
    reason = unavailable() or (None if _which("dmsetup") else "needs dmsetup (apt-get install dmsetup)")
    if reason:
        skip_or_fail(reason)
    hamtools_zip = request.getfixturevalue("hamtools_zip")
    where = tmp_path_factory.mktemp("ham-vm")
    share, report = where / "share", where / "report.json"
    done = subprocess.run(
        [str(ROOT / "scripts" / "vm-test"), "--device", "i6300esb", "--boots", "2", "--share", str(share),
         "--timeout", "300", "--report", str(report), "--", "/usr/bin/python3",
         str(ROOT / "tests" / "ham_vm_guest.py"), str(hamtools_zip)],
        capture_output=True, text=True, timeout=420)
    if done.returncode == 126:
        skip_or_fail(f"scripts/vm-test could not set up the VM: {done.stderr.strip()}")
    boots = json.loads(report.read_text())["boots"]
    facts = {n: json.loads((share / f"facts-{n}.json").read_text()) for n in (1, 2)
             if (share / f"facts-{n}.json").exists()}
    logs = {n: (share / f"ham-{n}.log").read_text() for n in (1, 2) if (share / f"ham-{n}.log").exists()}
    metrics = {n: (share / f"ham-{n}.prom").read_text() for n in (1, 2) if (share / f"ham-{n}.prom").exists()}
    return {"boots": boots, "facts": facts, "logs": logs, "metrics": metrics, "stderr": done.stderr,
            "rc": done.returncode}


def _which(tool):
    import shutil

    return shutil.which(tool)


def test_ham_feeds_it_then_lets_it_reset_the_board_for_an_unkillable_worker(run):
    boots, first, log = run["boots"], run["facts"][1], run["logs"][1]
    assert boots[0]["reset_by_watchdog"], run["stderr"]
    started = next(v for k, v in first.items() if k.startswith("ham start"))
    assert started["rc"] == 0, started["err"]
    assert first["alive"] - started["uptime"] > 3 * 4  # fed well past its 4 s timeout
    assert first["watchdog"]["timeout"] == 4 and first["watchdog"]["feeding"]
    assert "stuck: hung" in log and "not fed while stuck's kill is pending" in log
    assert "stuck is dead" not in log  # SIGKILL could not end it: no feeding ever again


def test_realtime_and_oom_protection_are_hams_own_not_its_childrens(run):
    assert run["facts"][1]["policies"] == {"ham": 1, "steady": 0}  # SCHED_FIFO / SCHED_OTHER
    assert run["facts"][1]["oom_score_adj"] == {"ham": -1000, "steady": 0}


def test_the_next_boot_names_the_culprit(run):
    status = run["facts"][2]["status"]
    last = status["watchdog"]["last_reset"]
    assert last["culprit"] == "stuck" and last["bootstatus_says_watchdog"] is True
    assert "blamed on stuck" in run["logs"][2]
    assert ("the last boot ended in a watchdog reset, blamed on stuck" in run["facts"][2]["status text"]
            and "the driver's boot status: watchdog reset" in run["facts"][2]["status text"])


def test_a_takeover_keeps_the_watchdog_open_and_fed(run):
    takeover = run["facts"][2]["takeover"]
    assert takeover["ham_pid"] == takeover["expected"] and takeover["ham_failures"] == 1
    assert takeover["state"] == "active" and takeover["feeding"] is True
    assert takeover["holds"] and takeover["holds"][0].startswith("/dev/watchdog")
    assert takeover["new complaints"] == []  # never closed: no "watchdog did not stop!"


def test_the_metrics_file_shows_the_starved_watchdog_then_the_reset_and_its_culprit(run):
    starved = parse(run["metrics"][1])  # what boot 1 wrote last, before the reset
    assert value(starved, "ham_watchdog_feeding") == 0 and value(starved, "ham_watchdog_pending_kills") == 1
    assert value(starved, "ham_entity_heartbeat_misses_total", entity="stuck", severity="high") == 1
    assert value(starved, "ham_watchdog_timeout_seconds") == 4
    after = parse(run["facts"][2]["metrics"])
    assert value(after, "ham_watchdog_last_boot_reset", entity="stuck") == 1
    assert value(after, "ham_watchdog_feeding") == 1 and value(after, "ham_watchdog_pending_kills") == 0


def test_sigterm_leaves_it_armed_and_hamctl_stop_disarms_it(run):
    second = run["facts"][2]
    assert second["after SIGTERM"] == {"state": "active", "timeout": "30"}
    assert second["after hamctl stop"] == {"rc": 0, "state": "inactive"}
    assert run["rc"] == 0 and not run["boots"][1]["reset_by_watchdog"]
