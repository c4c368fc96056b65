"""The guardian (SPEC §3 self-protection, issue 7): ham survives its own death, the guardian's
death, and `hamctl reexec`; the tree and every entity come through exactly once."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from hamtools.ham import (CONDABNORMALDEATH, CONDDEATH, HREARMAFTERRESTART, ham_action_restart, ham_attach, ham_condition,
                          ham_entity, ham_status)
from hamtools.hamd.launch import tagged_processes, topmost
from tests.conftest import ROOT
from tests.hamfix import HamRunner, entity_status, wait_for


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    path = tmp_path / "run"
    path.mkdir()
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(path))
    return path


@pytest.fixture
def runner(run_dir):
    ham = HamRunner(run_dir)
    yield ham
    leftovers = tagged(str(run_dir))
    ham.stop()
    for pids in leftovers.values():
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def tagged(run_dir: str) -> dict[str, list[int]]:
    """Live processes a ham of run_dir started, by entity, leaving out their own children:
    one per entity when nothing is duplicated."""
    return {name: [t[0] for t in topmost(procs)] for name, procs in tagged_processes(run_dir).items()}


def tree(status: dict) -> list:
    """What must come through a takeover unchanged: names, kinds, flags, enable states."""
    return sorted((e["name"], e["type"], tuple(e["flags"]), e["enabled"],
                   tuple((c["name"], c["type"], tuple(c["flags"]), c["enabled"],
                          tuple((a["name"], a["kind"], tuple(a["flags"]), a["enabled"]) for a in c["actions"]))
                         for c in e["conditions"]))
                  for e in status["entities"])


def answering(expect_pid: int | None = None) -> dict | None:
    try:
        status = ham_status()
    except OSError:
        return None
    if expect_pid is not None and status["ham_pid"] != expect_pid:
        return None
    return status if status["guardian_pid"] else None


def kill_ham(before: dict, what: str = "ham") -> dict:
    """SIGKILL ham (or its guardian) and wait for the survivor to answer with a guardian."""
    victim = before["ham_pid"] if what == "ham" else before["guardian_pid"]
    survivor = before["guardian_pid"] if what == "ham" else before["ham_pid"]
    os.kill(victim, signal.SIGKILL)
    after = wait_for(lambda: (s := answering(survivor)) and s["guardian_pid"] not in (None, victim) and s,
                     what=f"a new guardian after killing {what}")
    return after


def processes_named(comm: str) -> list[int]:
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/comm") as handle:
                if handle.read().strip() == comm:
                    found.append(int(name))
        except OSError:
            continue
    return found


def beating_client(runner: HamRunner, name: str, seconds: float) -> subprocess.Popen:
    """A self-attached process beating every 50 ms (period 100 ms, missed-low after 5)."""
    code = ("import sys, time\n"
            "from hamtools.ham import ham_attach_self, ham_heartbeat, ham_detach_self\n"
            f"h = ham_attach_self({name!r}, 100_000_000, 5, 10, 0)\n"
            "print('attached', flush=True)\n"
            f"end = time.monotonic() + {seconds}\n"
            "while time.monotonic() < end:\n"
            "    ham_heartbeat(); time.sleep(0.05)\n"
            "ham_detach_self(h)\n"
            "print('detached', flush=True)\n")
    client = runner.python(code)
    assert client.stdout.readline().strip() == "attached"
    return client


def test_kill_ham_the_guardian_takes_over_with_everything(runner, run_dir):
    runner.start()
    ehdl = ham_attach("sleeper", 0, -1, "/bin/sleep 600", 0)
    chdl = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    ham_action_restart(chdl, "again", "/bin/sleep 600", HREARMAFTERRESTART)
    ham_entity("later", 0, 0)
    client = beating_client(runner, "beater", 4)
    before = ham_status()
    sleeper = entity_status("sleeper")["pid"]
    assert before["guardian_pid"] in processes_named("ham-guardian")
    after = kill_ham(before)
    assert after["ham_pid"] == before["guardian_pid"] and after["ham_failures"] == before["ham_failures"] + 1
    assert tree(after) == tree(before)
    assert entity_status("sleeper")["pid"] == sleeper and tagged(str(run_dir)) == {"sleeper": [sleeper]}
    beats = entity_status("beater")["beats"]
    wait_for(lambda: entity_status("beater")["beats"] > beats + 5, what="beats through the new ham")
    assert entity_status("beater")["heartbeat_state"] == "healthy"
    # the new ham watches the re-adopted process: its death is handled (and restarted)
    os.kill(sleeper, signal.SIGKILL)
    wait_for(lambda: (s := entity_status("sleeper"))["pid"] not in (None, sleeper) and s["run"] == "running")
    assert client.wait(10) == 0 and client.stdout.read().strip() == "detached"
    assert entity_status("beater") is None  # detached from the new ham
    events = [e["what"] for e in runner.events() if e.get("entity") == "beater"]
    assert events == ["removed"], events  # no missed beat, no death: only the detach
    now = ham_status()  # one ham and one guardian of this runtime dir, no leftover of either
    assert ham_processes(str(run_dir)) == {"ham": [now["ham_pid"]], "ham-guardian": [now["guardian_pid"]]}
    log = runner.read_log()
    assert f"took over from ham pid {before['ham_pid']} (ham failures: 1)" in log


def test_after_a_takeover_a_readopted_death_keeps_its_status(runner):
    """Not ham's child any more, but the kernel's process connector tells how it ended (ham
    is root here): a core-dump signal is still an abnormal death."""
    runner.start()
    ehdl = ham_attach("crasher", 0, -1, "/bin/sleep 600", 0)
    ham_condition(ehdl, CONDABNORMALDEATH, "abnormal", 0)
    before = ham_status()
    crasher = entity_status("crasher")["pid"]
    kill_ham(before)
    assert entity_status("crasher")["pid"] == crasher
    os.kill(crasher, signal.SIGSEGV)
    wait_for(lambda: entity_status("crasher") is None, what="the death")
    assert '"crasher" died abnormally (killed by SIGSEGV)' in runner.read_log()
    assert [e["what"] for e in runner.events() if e.get("condition") == "abnormal"] == ["CONDABNORMALDEATH"]


def test_an_adopted_process_death_keeps_its_status(runner):
    runner.start()
    stranger = subprocess.Popen(["/bin/sleep", "600"])
    try:
        ham_attach("stranger", 0, stranger.pid, None, 0)
        stranger.send_signal(signal.SIGSEGV)  # (a shell's background job ignores SIGQUIT)
        stranger.wait(10)
        wait_for(lambda: entity_status("stranger") is None, what="the death")
        assert '"stranger" died abnormally (killed by SIGSEGV)' in runner.read_log()
    finally:
        stranger.kill()


def test_the_metrics_count_the_takeover(runner, tmp_path):
    from tests.test_metrics import parse, value

    prom = tmp_path / "ham.prom"
    runner.extra_args = ["--metrics-file", str(prom)]
    runner.start()
    ham_attach("kept", 0, -1, "/bin/sleep 600", 0)
    wait_for(lambda: prom.exists() and value(parse(prom.read_text()), "ham_entity_up", entity="kept") == 1)
    kill_ham(ham_status())
    wait_for(lambda: value(parse(prom.read_text()), "ham_failures_total") == 1, what="ham_failures_total 1")
    assert value(parse(prom.read_text()), "ham_entity_up", entity="kept") == 1


def test_kill_the_guardian_ham_starts_another(runner):
    runner.start()
    before = ham_status()
    after = kill_ham(before, "guardian")
    assert after["ham_pid"] == before["ham_pid"] and after["ham_failures"] == before["ham_failures"]
    assert "guardian died (killed by SIGKILL): starting a new one" in runner.read_log()
    assert after["guardian_failures"] == before["guardian_failures"] + 1
    info = subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "info", "/"], env=runner.env(), cwd=ROOT,
                          capture_output=True, text=True).stdout
    assert "Guardian Pid" in info and str(after["guardian_pid"]) in info and "Guardian Failures" in info
    again = kill_ham(after)  # the new guardian is as good as the first
    assert again["ham_pid"] == after["guardian_pid"]


def test_stop_stops_the_guardian_first_and_sigterm_is_no_death(runner):
    runner.start()
    guardian = ham_status()["guardian_pid"]
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(10) == 0
    assert not os.path.exists(f"/proc/{guardian}") or processes_named("ham-guardian").count(guardian) == 0
    time.sleep(0.3)  # a guardian that took the exit for a death would be answering by now
    assert answering() is None
    runner.start()
    guardian = ham_status()["guardian_pid"]
    subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "stop"], env=runner.env(), cwd=ROOT, check=True)
    assert guardian not in processes_named("ham-guardian") and runner.proc.poll() is not None
    assert answering() is None


def test_the_guardian_ignores_what_ham_ignores_and_passes_on_term_and_hup(runner, tmp_path):
    config = tmp_path / "board.conf"
    config.write_text("NAME=one /bin/sleep 600\n")
    runner.extra_args = ["--config", str(config)]
    runner.start()
    guardian = ham_status()["guardian_pid"]
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        os.kill(guardian, signum)
    time.sleep(0.2)
    assert ham_status()["guardian_pid"] == guardian  # all ignored, by both
    config.write_text("NAME=one /bin/sleep 600\nNAME=two /bin/sleep 600\n")
    os.kill(guardian, signal.SIGHUP)  # passed on: ham reloads
    wait_for(lambda: entity_status("two") is not None, what="the reload the guardian passed on")
    os.kill(guardian, signal.SIGTERM)  # passed on: ham stops, the guardian first
    assert runner.proc.wait(10) == 0
    assert answering() is None and guardian not in processes_named("ham-guardian")


def test_deaths_during_the_takeover_are_seen(runner):
    runner.start()
    ehdl = ham_attach("victim", 0, -1, "/bin/sleep 600", 0)
    chdl = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    ham_action_restart(chdl, "again", "/bin/sleep 600", HREARMAFTERRESTART)
    client = beating_client(runner, "doomed", 600)
    before = ham_status()
    victim = entity_status("victim")["pid"]
    # both die while no ham watches: ham first, then the two, before the guardian's ham is up
    os.kill(before["ham_pid"], signal.SIGKILL)
    os.kill(victim, signal.SIGKILL)
    client.kill()
    client.wait()
    wait_for(lambda: answering(before["guardian_pid"]), what="the new ham")
    wait_for(lambda: (s := entity_status("victim"))["pid"] not in (None, victim) and s["run"] == "running",
             what="the victim restarted")
    wait_for(lambda: entity_status("doomed") is None, what="the dead self-attached client gone")


def test_reexec_into_the_built_zipapp(runner, hamtools_zip):
    runner.start()
    ham_attach("child", 0, -1, "/bin/sleep 600", 0)
    before = ham_status()
    done = subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "reexec", str(hamtools_zip)],
                          env=runner.env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "ham re-executed" in done.stdout, done.stderr
    assert tree(ham_status()) == tree(before) and ham_status()["ham_pid"] == before["ham_pid"]
    with open(f"/proc/{runner.proc.pid}/cmdline", "rb") as cmdline:
        assert f"{hamtools_zip}/site-packages".encode() in cmdline.read()


def test_reexec_keeps_every_entity_in_place_with_exit_statuses(runner, tmp_path):
    runner.start()
    ham_attach("child", 0, -1, "/bin/sleep 600", 0)
    client = beating_client(runner, "beater", 3)
    before = ham_status()
    child = entity_status("child")["pid"]
    copy = tmp_path / "hamtools-copy"
    shutil.copytree(ROOT / "hamtools", copy / "hamtools", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "reexec", str(copy)], env=runner.env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    after = ham_status()
    assert after["ham_pid"] == before["ham_pid"] == runner.proc.pid and after["ham_failures"] == 0
    assert after["guardian_pid"] not in (None, before["guardian_pid"])
    assert tree(after) == tree(before) and entity_status("child")["pid"] == child
    with open(f"/proc/{runner.proc.pid}/cmdline", "rb") as cmdline:
        assert str(copy).encode() in cmdline.read()  # the new code runs
    # still ham's own child: its exit status is known (a core-dump signal is an abnormal death)
    os.kill(child, signal.SIGSEGV)
    wait_for(lambda: entity_status("child") is None, what="the child's death")
    assert "killed by SIGSEGV" in runner.read_log()
    assert client.wait(10) == 0 and client.stdout.read().strip() == "detached"


def test_reexec_refuses_code_that_cannot_run_ham(runner, tmp_path):
    runner.start()
    before = ham_status()
    (tmp_path / "empty").mkdir()
    for target, code, why in ((tmp_path / "nothing", 3, "no such file"), (tmp_path / "empty", 1, "cannot run ham")):
        done = subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "reexec", str(target)],
                              env=runner.env(), cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert done.returncode == code and why in done.stderr and done.stderr.count("\n") == 1, done.stderr
    after = ham_status()
    assert (after["ham_pid"], after["started"], after["guardian_pid"]) == \
        (before["ham_pid"], before["started"], before["guardian_pid"])


def test_a_new_ham_that_dies_starting_is_replaced_by_the_guardian(runner, tmp_path):
    runner.start()
    ham_attach("child", 0, -1, "/bin/sleep 600", 0)
    before = ham_status()
    broken = tmp_path / "broken"
    shutil.copytree(ROOT / "hamtools", broken / "hamtools", ignore=shutil.ignore_patterns("__pycache__"))
    daemon = broken / "hamtools" / "hamd" / "daemon.py"
    daemon.write_text(daemon.read_text().replace("        self._resume()\n",
                                                 "        os._exit(70)  # a bug in the new code\n", 1))
    subprocess.run([sys.executable, "-m", "hamtools", "hamctl", "reexec", "--wait", "3", str(broken)],
                   env=runner.env(), cwd=ROOT, capture_output=True, timeout=30)
    after = wait_for(lambda: answering(before["guardian_pid"]), what="the guardian taking over")
    assert tree(after) == tree(before) and after["ham_failures"] == 1
    assert entity_status("child")["pid"] == before["entities"][1]["pid"]


def test_a_torn_state_file_gives_what_reads_whole(run_dir):
    runner = HamRunner(run_dir, ["--no-guardian"]).start()
    for name in ("first", "second", "third"):
        ham_entity(name, 0, 0)
    runner.stop()
    state = run_dir / "state.json"
    whole = state.read_bytes()
    state.write_bytes(whole[:whole.index(b'"name":"third"') + 10])  # torn inside the last
    (run_dir / ".state.json.99999.tmp").write_bytes(b'{"half a wri')
    runner.start()
    try:
        names = [e["name"] for e in ham_status()["entities"]]
        assert names[1:] == ["first", "second"]
        log = runner.read_log()
        assert "is unreadable" in log and "starting with the 2 entities that read whole (1 did not)" in log
        assert (run_dir / "state.json.corrupt").read_bytes() == whole[:whole.index(b'"name":"third"') + 10]
        assert not (run_dir / ".state.json.99999.tmp").exists()
    finally:
        runner.stop()
    state.write_bytes(b"\x00garbage\xff" * 50)
    runner.start()
    try:
        assert [e["name"] for e in ham_status()["entities"]] == [".__global"]
        assert "starting with the 0 entities" in runner.read_log()
    finally:
        runner.stop()


# ---- takeover loops: kill ham or its guardian at random moments -----------------------------

BOARD = """
[service.steady]
command = "/bin/sleep 600"

[service.crashy]
command = "/bin/sh -c 'sleep 0.2; exit 3'"
restart = "always"
max_restarts = 100000
backoff_initial = 0.01
backoff_factor = 1.0
"""
EXTRA = """
[service.extra]
command = "/bin/sleep 600"
"""


def ham_processes(run_dir: str) -> dict[str, list[int]]:
    """Live (not zombie) processes that are ham or a guardian of run_dir."""
    found = {"ham": [], "ham-guardian": []}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/comm") as comm, open(f"/proc/{name}/cmdline", "rb") as cmdline, \
                    open(f"/proc/{name}/stat", "rb") as stat:
                what, words, state = comm.read().strip(), cmdline.read(), stat.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if what in found and run_dir.encode() in words and state != b"Z":
            found[what].append(int(name))
    return found


def settled(run_dir: str, names: set[str]) -> dict:
    """Wait until ham answers with a guardian and with the named entities each running once
    (none twice, no process without its entity): the invariants of every round."""
    why = ["nothing yet"]

    def check():
        first = answering()
        if first is None:
            return None
        procs, found = ham_processes(run_dir), tagged(run_dir)
        second = answering()
        if second is None or [e["pid"] for e in first["entities"]] != [e["pid"] for e in second["entities"]]:
            return None  # something moved while we looked
        pids = {e["name"]: e["pid"] for e in first["entities"] if e["type"] == "attached"}
        problems = {
            "processes": procs != {"ham": [first["ham_pid"]], "ham-guardian": [first["guardian_pid"]]} and procs,
            "missing": names - {e["name"] for e in first["entities"]},
            "orphans": set(found) - set(pids),
            "not once": {name: (pid, found.get(name)) for name, pid in pids.items()
                         if found.get(name, []) != ([pid] if pid else [])},
        }
        why[0] = {k: v for k, v in problems.items() if v}
        return None if why[0] else first
    try:
        return wait_for(check, timeout=15, interval=0.05, what="one ham, one guardian, every entity once")
    except AssertionError:
        raise AssertionError(f"not settled: {why[0]}") from None


def test_takeover_loop_at_random_moments(runner, run_dir, tmp_path):
    import random
    import threading

    from hamtools.ham import ham_attach as attach

    rounds = int(os.environ.get("HAMTOOLS_TAKEOVER_ROUNDS", "8"))
    rng = random.Random(int(os.environ.get("HAMTOOLS_TAKEOVER_SEED", "7")))
    board = tmp_path / "board.toml"
    board.write_text(BOARD)
    runner.extra_args = ["--config", str(board)]
    runner.start(verbosity="2")
    clients = [beating_client(runner, f"self{i}", 3600) for i in range(2)]
    names = {"steady", "crashy", "self0", "self1"}
    try:
        status = settled(str(run_dir), names)
        for round_number in range(rounds):
            moment = ("restart", "reload", "attaches", "flood")[round_number % 4]
            stop = threading.Event()
            acknowledged, uncertain = [], []

            def burst():
                for k in range(200):
                    if stop.is_set():
                        return
                    name = f"b{round_number}x{k}"
                    try:
                        attach(name, 0, -1, "/bin/sleep 600", 0)
                        acknowledged.append(name)
                    except OSError:
                        uncertain.append(name)
                        time.sleep(0.02)

            worker = None
            if moment == "restart":
                crashy = entity_status("crashy")["pid"]
                if crashy:
                    os.kill(crashy, signal.SIGKILL)
            elif moment == "reload":
                board.write_text(BOARD + (EXTRA if "extra" not in names else ""))
                names ^= {"extra"}
                os.kill(status["ham_pid"], signal.SIGHUP)
            elif moment == "attaches":
                worker = threading.Thread(target=burst)
                worker.start()
            else:
                worker = runner.python("import time\nfrom hamtools.ham import ham_heartbeat, ham_attach_self\n"
                                       "ham_attach_self('flooder', 0, 0, 0, 0)\n"
                                       "while True: ham_heartbeat()\n")
            time.sleep(rng.uniform(0, 0.05 if moment in ("restart", "reload") else 0.3))
            victim = "ham" if round_number % 3 != 2 else "guardian"
            os.kill(status["ham_pid" if victim == "ham" else "guardian_pid"], signal.SIGKILL)
            if isinstance(worker, threading.Thread):
                time.sleep(0.2)
                stop.set()
                worker.join()
            elif worker is not None:
                worker.kill()
                worker.wait()
            present = {e["name"] for e in (wait_for(answering, what="ham after the kill"))["entities"]}
            names |= set(acknowledged) | (set(uncertain) & present)
            status = settled(str(run_dir), names)
            beats = {c: entity_status(c)["beats"] for c in ("self0", "self1")}
            wait_for(lambda: all(entity_status(c)["beats"] > beats[c] for c in beats), what="self-attached beats")
            assert status["ham_failures"] == sum(1 for r in range(round_number + 1) if r % 3 != 2)
        assert all(c.poll() is None for c in clients)  # they never noticed
        assert "is unreadable" not in runner.read_log()  # no kill, at any instant, tore the state
        self_events = [e for e in runner.events() if e.get("entity") in ("self0", "self1")]
        assert not [e for e in self_events if e["what"] not in ("removed",)], self_events
    finally:
        for client in clients:
            client.kill()
            client.wait()


def test_a_recorded_pid_that_is_a_zombie_is_dead_and_the_tagged_heir_is_adopted(run_dir):
    """A dead ham's child that init has not reaped yet is a zombie: not the entity's process.
    The one its ham started after it (and died before saving) is found by its tag."""
    import json

    from hamtools.core import proc

    zombie = subprocess.Popen(["/bin/true"])  # never waited for until the end: a zombie
    wait_for(lambda: proc.ProcessId.of(zombie.pid).zombie(), what="a zombie")
    runner = HamRunner(run_dir, ["--no-guardian"]).start()
    try:
        ham_attach("x", 0, -1, "/bin/sleep 600", 0)
        heir = entity_status("x")["pid"]
        runner.stop()  # x runs on
        state = json.loads((run_dir / "state.json").read_text())
        record = next(e for e in state["model"]["entities"] if e["name"] == "x")
        record["pid"], record["start"] = zombie.pid, proc.start_time(zombie.pid)  # as if not saved since
        (run_dir / "state.json").write_text(json.dumps(state))
        runner.start()
        assert entity_status("x")["pid"] == heir and tagged(str(run_dir)) == {"x": [heir]}
        assert f"Re-adopted x (pid {heir})" in runner.read_log()
    finally:
        runner.stop()
        zombie.wait()
        os.kill(heir, signal.SIGKILL)
