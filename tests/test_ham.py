"""ham with real processes, signals and sockets: every condition fired for real, every action
observed by its effect, QNX's pruning rules, queue independence, persistence."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hamtools.core.sigvalue import SignalReceiver
from hamtools.ham import *  # noqa: F403  (the API under test, QNX names)
from hamtools.neutrino import ChannelCreate, ChannelDestroy, MsgReceivePulse
from tests.hamfix import HamRunner, entity_status, ham, kill_leftovers, wait_for  # noqa: F401

SLEEP = "/bin/sleep 600"


@pytest.fixture
def chid():
    channel = ChannelCreate(0)
    yield channel
    ChannelDestroy(channel)


def pulses(chid, count, timeout=10):
    return [(p.code, p.value) for p in (MsgReceivePulse(chid, timeout=timeout) for _ in range(count))]


def no_pulse(chid, within=0.4):
    with pytest.raises(OSError) as nothing:
        MsgReceivePulse(chid, timeout=within)
    assert nothing.value.errno == errno.ETIMEDOUT


def notify(chdl, name, chid, code, flags=HREARMAFTERRESTART):  # noqa: F405
    return ham_action_notify_pulse(chdl, name, ND_LOCAL_NODE, os.getpid(), chid, code, code * 10, flags)  # noqa: F405


def attach_sleeper(name, flags=0, line=SLEEP):
    return ham_attach(name, ND_LOCAL_NODE, -1, line, flags)  # noqa: F405


def pid_of(name):
    return wait_for(lambda: (entity_status(name) or {}).get("pid"), what=f"{name}'s pid")


# ---- death, restart, abnormal death -------------------------------------------------------

def test_restart_on_death_fires_condrestart(ham, chid):
    ehdl = attach_sleeper("web")
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
    ham_action_restart(death, "restart", "/bin/sleep 601", HREARMAFTERRESTART)  # noqa: F405
    notify(death, "told", chid, 1)
    notify(ham_condition(ehdl, CONDRESTART, "restarted", HREARMAFTERRESTART), "told", chid, 2)  # noqa: F405
    first = pid_of("web")
    os.kill(first, signal.SIGKILL)
    # CONDRESTART's job and the rest of "death" (parked in its start window) may interleave
    assert sorted(pulses(chid, 2)) == [(1, 10), (2, 20)]
    status = entity_status("web")
    assert status["pid"] != first and status["run"] == "running" and status["restarts"] == 1
    with open(f"/proc/{status['pid']}/cmdline", "rb") as cmdline:
        assert cmdline.read() == b"/bin/sleep\x00601\x00"
    os.kill(status["pid"], signal.SIGKILL)  # re-armed: it restarts again
    assert sorted(pulses(chid, 2)) == [(1, 10), (2, 20)]
    assert entity_status("web")["restarts"] == 2


def test_abnormal_death_fires_both_conditions(ham, chid):
    ehdl = attach_sleeper("crashy", HENTITYKEEPONDEATH)  # noqa: F405
    notify(ham_condition(ehdl, CONDABNORMALDEATH, "abnormal", 0), "a", chid, 6)  # noqa: F405
    notify(ham_condition(ehdl, CONDDEATH, "death", 0), "d", chid, 1)  # noqa: F405
    os.kill(pid_of("crashy"), signal.SIGSEGV)
    assert sorted(pulses(chid, 2)) == [(1, 10), (6, 60)]
    assert entity_status("crashy")["run"] == "dead"


def test_plain_exit_is_not_abnormal(ham, chid):
    ehdl = attach_sleeper("quitter", HENTITYKEEPONDEATH, "/bin/sh -c 'sleep 0.3; exit 3'")  # noqa: F405
    notify(ham_condition(ehdl, CONDABNORMALDEATH, "abnormal", 0), "a", chid, 6)  # noqa: F405
    notify(ham_condition(ehdl, CONDDEATH, "death", 0), "d", chid, 1)  # noqa: F405
    assert pulses(chid, 1) == [(1, 10)]
    no_pulse(chid)


def test_entity_not_restarted_is_removed_unless_keepondeath(ham, chid):
    attach_sleeper("gone")
    attach_sleeper("kept", HENTITYKEEPONDEATH)  # noqa: F405
    os.kill(pid_of("gone"), signal.SIGKILL)
    os.kill(pid_of("kept"), signal.SIGKILL)
    wait_for(lambda: entity_status("gone") is None, what="removal")
    kept = wait_for(lambda: entity_status("kept")["run"] == "dead" and entity_status("kept"))
    assert kept["pid"] is None and kept["deaths"] == 1


def test_failed_restart_runs_fail_list_and_removes_entity(ham, chid, tmp_path):
    marker = tmp_path / "clear.ran"
    ehdl = attach_sleeper("mod")
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
    restart = ham_action_restart(death, "restart", "/nonexistent/app", HREARMAFTERRESTART)  # noqa: F405
    ham_action_fail_execute(restart, "clear", f"/bin/touch {marker}", 0)  # noqa: F405
    os.kill(pid_of("mod"), signal.SIGKILL)
    wait_for(marker.exists, what="the fail list's execute")
    wait_for(lambda: entity_status("mod") is None, what="removal after a failed restart")


def test_restart_that_dies_in_its_start_window_fails(ham, chid):
    ehdl = attach_sleeper("flaky", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
    restart = ham_action_restart(death, "restart", "/bin/sh -c 'exit 1'", HREARMAFTERRESTART | HACTIONKEEPONFAIL)  # noqa: F405
    ham_action_fail_notify_pulse(restart, "tell", ND_LOCAL_NODE, os.getpid(), chid, 9, 1, 0)  # noqa: F405
    notify(ham_condition(ehdl, CONDRESTART, "restarted", HREARMAFTERRESTART), "r", chid, 2)  # noqa: F405
    os.kill(pid_of("flaky"), signal.SIGKILL)
    assert pulses(chid, 1) == [(9, 1)]
    no_pulse(chid)
    assert wait_for(lambda: entity_status("flaky")["run"] == "failed", what="failed")


# ---- adoption, daemons, detach, attach ----------------------------------------------------

def test_adopted_process_death_is_seen_by_pidfd(ham, chid):
    stranger = subprocess.Popen(["/bin/sleep", "600"])
    try:
        ehdl = ham_attach("stranger", ND_LOCAL_NODE, stranger.pid, None, 0)  # noqa: F405
        notify(ham_condition(ehdl, CONDDEATH, "death", 0), "d", chid, 1)  # noqa: F405
        assert entity_status("stranger")["pid"] == stranger.pid
        stranger.kill()
        assert pulses(chid, 1) == [(1, 10)]
    finally:
        stranger.kill()
        stranger.wait()


def test_attach_unknown_pid_is_esrch(ham):
    with pytest.raises(OSError) as bad:
        ham_attach("ghost", ND_LOCAL_NODE, 999999, None, 0)  # noqa: F405
    assert bad.value.errno == errno.ESRCH


DAEMON = textwrap.dedent("""\
    import os, time
    if os.fork(): os._exit(0)
    os.setsid()
    if os.fork(): os._exit(0)
    time.sleep(600)
""")


def test_a_daemonizing_process_is_followed_to_its_new_pid(ham, chid, tmp_path):
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    ehdl = attach_sleeper("daemon", 0, f"{sys.executable} {script}")
    notify(ham_condition(ehdl, CONDDEATH, "death", 0), "d", chid, 1)  # noqa: F405
    # ham may follow before we first look; the daemon is the process whose session was made
    # by an intermediate that has exited (setsid, fork, exit) and whose pid then stays put
    final = wait_for(lambda: (s := entity_status("daemon")) and s["pid"] and
                     _cmd(s["pid"]).endswith(str(script)) and _daemonized(s["pid"]) and s["pid"])
    no_pulse(chid)  # following is not a death
    assert entity_status("daemon")["pid"] == final
    ham.spawned.add(final)
    os.kill(final, signal.SIGKILL)
    assert pulses(chid, 1) == [(1, 10)]


def _cmd(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode().strip()
    except FileNotFoundError:
        return ""


def _daemonized(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            session = int(stat.read().rsplit(")", 1)[1].split()[3])
    except FileNotFoundError:
        return False
    # the second fork: not a session leader, in a session whose leader is already gone
    return session != pid and session != os.getsid(0) and not os.path.exists(f"/proc/{session}")


def test_detach_fires_conddetach_and_leaves_the_process(ham, chid):
    ehdl = attach_sleeper("free")
    notify(ham_condition(ehdl, CONDDETACH, "detach", 0), "d", chid, 2)  # noqa: F405
    pid = pid_of("free")
    ham.spawned.add(pid)
    ham_detach(ehdl, 0)  # noqa: F405
    assert pulses(chid, 1) == [(2, 20)]
    assert entity_status("free") is None
    os.kill(pid, 0)  # still running


def test_detach_runs_its_own_actions_even_behind_a_busy_queue(ham, chid):
    busy = attach_sleeper("busy")
    hold = ham_condition_state(busy, "hold", CONDSTATEANY, CONDSTATEANY, 0)  # noqa: F405  (OTHER queue)
    ham_action_waitfor(hold, "wait", None, 800, 0)  # noqa: F405
    ehdl = attach_sleeper("leaving")
    notify(ham_condition(ehdl, CONDDETACH, "detach", 0), "own", chid, 2)  # noqa: F405
    ham_entity_condition_state(busy, 1, 0)  # noqa: F405
    ham.spawned.add(pid_of("leaving"))
    ham_detach(ehdl, 0)  # noqa: F405
    assert entity_status("leaving") is None
    assert pulses(chid, 1) == [(2, 20)]  # after the waitfor, but it comes


def test_placeholder_fires_condattach(ham, chid):
    placeholder = ham_entity("later", ND_LOCAL_NODE, 0)  # noqa: F405
    notify(ham_condition(placeholder, CONDATTACH, "attached", 0), "a", chid, 7)  # noqa: F405
    assert entity_status("later")["type"] == "placeholder"
    attach_sleeper("later")
    assert pulses(chid, 1) == [(7, 70)]
    assert entity_status("later")["type"] == "attached"


def test_global_entity_matches_every_entity(ham, chid):
    glob = ham_entity_handle(ND_LOCAL_NODE, None, 0)  # noqa: F405
    notify(ham_condition(glob, CONDDEATH, "anydeath", HREARMAFTERRESTART), "g", chid, 3)  # noqa: F405
    attach_sleeper("one", HENTITYKEEPONDEATH)  # noqa: F405
    attach_sleeper("two", HENTITYKEEPONDEATH)  # noqa: F405
    os.kill(pid_of("one"), signal.SIGKILL)
    os.kill(pid_of("two"), signal.SIGKILL)
    assert pulses(chid, 2) == [(3, 30), (3, 30)]


# ---- state and raise ------------------------------------------------------------------------

def test_state_matching_values_wildcards_sets_and_inversion(ham, chid):
    ehdl = attach_sleeper("media")
    notify(ham_condition_state(ehdl, "ok_to_pok", 1, 2, 0), "exact", chid, 1)  # noqa: F405
    notify(ham_condition_state(ehdl, "any_to_3", CONDSTATEANY, 3, 0), "wild", chid, 2)  # noqa: F405
    notify(ham_condition_state(ehdl, "into_4_or_5", 0, (1 << 4) | (1 << 5), HCONDSTATETOSET), "set", chid, 3)  # noqa: F405
    notify(ham_condition_state(ehdl, "out_of_not_1", (1 << 1), 0, HCONDSTATEFROMSET | HCONDSTATEFROMINV), "inv", chid, 4)  # noqa: F405
    for state in (1, 2, 3, 4, 1):
        ham_entity_condition_state(ehdl, state, 0)  # noqa: F405
    # 0->1: inv (0 is not in {1}). 1->2: exact. 2->3: wild, inv. 3->4: set, inv. 4->1: inv.
    got = pulses(chid, 7)
    assert sorted(got) == sorted([(4, 40), (1, 10), (2, 20), (4, 40), (3, 30), (4, 40), (4, 40)])
    no_pulse(chid)
    assert entity_status("media")["state"] == 1


def test_raise_matching_with_wildcards(ham, chid):
    ehdl = attach_sleeper("mixer")
    notify(ham_condition_raise(ehdl, "chan2", 1, 2, CONDRAISESEVERITYANY, 0), "c2", chid, 1)  # noqa: F405
    notify(ham_condition_raise(ehdl, "any", 0, 0, 0, 0), "all", chid, 2)  # noqa: F405
    ham_entity_condition_raise(ehdl, 1, 2, 9, 0)  # noqa: F405
    ham_entity_condition_raise(ehdl, 1, 3, 9, 0)  # noqa: F405
    assert sorted(pulses(chid, 3)) == [(1, 10), (2, 20), (2, 20)]
    no_pulse(chid)


# ---- heartbeats and self-attached entities ------------------------------------------------

CLIENT = textwrap.dedent("""\
    import sys, time
    from hamtools.ham import *
    e = ham_attach_self(sys.argv[1], int(float(sys.argv[2]) * 1e9), int(sys.argv[3]), int(sys.argv[4]), 0)
    print("attached", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd.startswith("beat"):
            for _ in range(int(cmd.split()[1])):
                ham_heartbeat(); time.sleep(float(sys.argv[2]) / 2)
            print("beaten", flush=True)
        elif cmd == "detach":
            ham_detach_self(e, 0); print("detached", flush=True)
        elif cmd == "exit":
            break
""")


def start_client(ham, name, period=0.2, hpdl=1, hpdh=3):
    client = ham.python(CLIENT, name, period, hpdl, hpdh, stdin=subprocess.PIPE)
    assert client.stdout.readline() == "attached\n", client.stderr.read()
    return client


def send(client, line, expect=None):
    client.stdin.write(line + "\n")
    client.stdin.flush()
    if expect:
        assert client.stdout.readline() == expect + "\n"


def test_the_self_attach_thread_leaves_the_applications_signals_alone(ham):
    """ham_attach_self starts a thread (hamtools.ham.keeper); a signal the application blocks
    to take it with sigwait or a signalfd must never be delivered to that thread instead,
    where it would take its default action (found when a test's notify-signal action killed
    the test process that had a self-attached entity)."""
    client = ham.python(textwrap.dedent("""\
        import os, signal
        from hamtools.ham import ham_attach_self
        wanted = signal.SIGRTMIN + 1
        ham_attach_self("signals", 10**9, 1, 3, 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, [wanted])  # after the thread started: its mask is its own
        os.kill(os.getpid(), wanted)  # to the process: the kernel picks a thread not blocking it
        print(signal.sigtimedwait([wanted], 5).si_signo == wanted, flush=True)
    """))
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0 and out == "True\n", (client.returncode, err)


def test_missed_heartbeats_fire_low_then_high_once_per_episode(ham, chid):
    client = start_client(ham, "worker", period=0.2, hpdl=1, hpdh=3)
    ehdl = ham_entity_handle(ND_LOCAL_NODE, "worker", 0)  # noqa: F405
    notify(ham_condition(ehdl, CONDHBEATMISSEDLOW, "low", HREARMAFTERRESTART), "l", chid, 4)  # noqa: F405
    high = ham_condition(ehdl, CONDHBEATMISSEDHIGH, "high", HREARMAFTERRESTART)  # noqa: F405
    notify(high, "h", chid, 5)
    send(client, "beat 8", "beaten")  # 0.8 s of beating: nothing fires
    assert entity_status("worker")["heartbeat_state"] in ("healthy", "missedlow")
    assert pulses(chid, 2, timeout=5) == [(4, 40), (5, 50)]
    assert entity_status("worker")["heartbeat_state"] == "missedhigh"
    no_pulse(chid, 0.6)  # once per episode
    ham_action_heartbeat_healthy(high, "rearm", HREARMAFTERRESTART)  # noqa: F405
    ham_entity_control(ehdl, HENABLE, 0)  # noqa: F405
    send(client, "exit")
    client.wait(5)


def test_heartbeat_healthy_rearms_the_episode(ham, chid):
    client = start_client(ham, "hb", period=0.2, hpdl=1, hpdh=2)
    ehdl = ham_entity_handle(ND_LOCAL_NODE, "hb", 0)  # noqa: F405
    low = ham_condition(ehdl, CONDHBEATMISSEDLOW, "low", 0)  # noqa: F405
    notify(low, "l", chid, 4)
    ham_action_heartbeat_healthy(low, "healthy", 0)  # noqa: F405
    assert pulses(chid, 2, timeout=5) == [(4, 40), (4, 40)]  # healthy again, so it fires again
    send(client, "exit")
    client.wait(5)


def test_self_attached_death_and_detach(ham, chid):
    glob = ham_entity_handle(ND_LOCAL_NODE, None, 0)  # noqa: F405
    notify(ham_condition(glob, CONDDEATH, "death", 0), "d", chid, 1)  # noqa: F405
    notify(ham_condition(glob, CONDDETACH, "detach", 0), "x", chid, 2)  # noqa: F405
    quitter = start_client(ham, "quitter", period=0)
    polite = start_client(ham, "polite", period=0)
    assert entity_status("quitter")["type"] == "self"
    quitter.kill()
    assert pulses(chid, 1) == [(1, 10)]
    send(polite, "detach", "detached")
    assert pulses(chid, 1) == [(2, 20)]
    send(polite, "exit")
    polite.wait(5)
    quitter.wait(5)


def test_heartbeat_applet_one_shot(ham, hamtools_zip, clean_python):
    client = start_client(ham, "shellworker", period=1, hpdl=1, hpdh=2)
    env = ham.env()
    run = lambda name: subprocess.run([clean_python, "-I", str(hamtools_zip), "heartbeat", name],
                                      env=env, capture_output=True, text=True)
    assert run("shellworker").returncode == 0  # root may beat for anyone
    unknown = run("nobody")
    assert unknown.returncode == 3 and "no such entity" in unknown.stderr
    send(client, "exit")
    client.wait(5)


# ---- actions ------------------------------------------------------------------------------

def test_execute_success_failure_fail_list_and_pruning(ham, chid, tmp_path):
    ehdl = attach_sleeper("svc", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", HCONDKEEPONEMPTY)  # noqa: F405
    ok = tmp_path / "ok"
    ham_action_execute(death, "good", f"/bin/touch {ok}", 0)  # noqa: F405
    bad = ham_action_execute(death, "bad", "/bin/false", 0)  # noqa: F405
    ham_action_fail_notify_pulse(bad, "badfail", ND_LOCAL_NODE, os.getpid(), chid, 8, 0, 0)  # noqa: F405
    kept = ham_action_execute(death, "kept", "/bin/false", HACTIONKEEPONFAIL)  # noqa: F405
    ham_action_fail_log(kept, "note", "kept failed", 1, 0, 0)  # noqa: F405
    notify(death, "last", chid, 1)
    os.kill(pid_of("svc"), signal.SIGKILL)
    assert pulses(chid, 2) == [(8, 0), (1, 10)]
    assert ok.exists()
    actions = [a["name"] for a in entity_status("svc")["conditions"][0]["actions"]]
    assert actions == ["good", "kept", "last"]  # the failed one is pruned; KEEPONFAIL stays
    assert "User: svc/death/kept/fail/note: kept failed" in ham.read_log()


def test_breakonfail_skips_the_rest(ham, chid):
    ehdl = attach_sleeper("brk", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", 0)  # noqa: F405
    ham_action_execute(death, "fails", "/bin/false", HACTIONBREAKONFAIL)  # noqa: F405
    notify(death, "skipped", chid, 1)
    notify(ham_condition(ehdl, CONDDEATH, "other", 0), "other", chid, 2)  # noqa: F405
    os.kill(pid_of("brk"), signal.SIGKILL)
    assert pulses(chid, 1) == [(2, 20)]
    no_pulse(chid)


def test_execute_timeout_kills_and_fails(ham, chid):
    ehdl = attach_sleeper("slow", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", 0)  # noqa: F405
    stuck = ham_action_execute(death, "stuck", "/bin/sleep 30", HACTIONKEEPONFAIL, timeout=0.3)  # noqa: F405
    ham_action_fail_notify_pulse(stuck, "f", ND_LOCAL_NODE, os.getpid(), chid, 9, 0, 0)  # noqa: F405
    started = time.monotonic()
    os.kill(pid_of("slow"), signal.SIGKILL)
    assert pulses(chid, 1) == [(9, 0)]
    assert time.monotonic() - started < 5


def test_waitfor_path_and_delay(ham, chid, tmp_path):
    ehdl = attach_sleeper("nfs", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", 0)  # noqa: F405
    target = tmp_path / "mounted"
    ham_action_waitfor(death, "mount", str(target), 3000, 0)  # noqa: F405
    notify(death, "after", chid, 1)
    missing = ham_action_waitfor(death, "never", str(tmp_path / "never"), 200, 0)  # noqa: F405
    ham_action_fail_notify_pulse(missing, "f", ND_LOCAL_NODE, os.getpid(), chid, 9, 0, 0)  # noqa: F405
    os.kill(pid_of("nfs"), signal.SIGKILL)
    no_pulse(chid, 0.3)  # still waiting for the path
    target.touch()
    assert pulses(chid, 2) == [(1, 10), (9, 0)]
    with pytest.raises(OSError) as bad:
        ham_action_waitfor(death, "zero", None, 0, 0)  # noqa: F405
    assert bad.value.errno == errno.EINVAL


def test_a_waitfor_in_one_queue_never_delays_another(ham, chid):
    ehdl = attach_sleeper("q", HENTITYKEEPONDEATH)  # noqa: F405
    slow = ham_condition(ehdl, CONDDEATH, "slow", 0)  # noqa: F405
    ham_action_waitfor(slow, "wait", None, 1500, 0)  # noqa: F405
    notify(slow, "late", chid, 1)
    notify(ham_condition(ehdl, CONDDEATH, "independent", HCONDINDEPENDENT), "i", chid, 2)  # noqa: F405
    notify(ham_condition(ehdl, CONDDEATH, "nowait", HCONDNOWAIT), "n", chid, 3)  # noqa: F405
    with pytest.raises(OSError) as bad:
        ham_action_waitfor(ham_condition_handle(ND_LOCAL_NODE, "q", "nowait", 0), "w", None, 10, 0)  # noqa: F405
    assert bad.value.errno == errno.EINVAL
    started = time.monotonic()
    os.kill(pid_of("q"), signal.SIGKILL)
    fast = pulses(chid, 2)
    fast_after = time.monotonic() - started
    assert sorted(fast) == [(2, 20), (3, 30)] and fast_after < 1.0
    assert pulses(chid, 1) == [(1, 10)] and time.monotonic() - started >= 1.5


def test_rearm_rules_after_restart(ham, chid):
    ehdl = attach_sleeper("arm")
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
    ham_action_restart(death, "restart", SLEEP, HREARMAFTERRESTART)  # noqa: F405
    notify(death, "always", chid, 1, HREARMAFTERRESTART)  # noqa: F405
    notify(death, "once", chid, 2, 0)
    notify(ham_condition(ehdl, CONDDEATH, "unarmed", 0), "gone", chid, 3, HREARMAFTERRESTART)  # noqa: F405
    os.kill(pid_of("arm"), signal.SIGKILL)
    assert sorted(pulses(chid, 3)) == [(1, 10), (2, 20), (3, 30)]
    conditions = {c["name"]: [a["name"] for a in c["actions"]] for c in entity_status("arm")["conditions"]}
    assert conditions == {"death": ["restart", "always"]}  # 'once' ran and went; 'unarmed' went
    os.kill(wait_for(lambda: (s := entity_status("arm"))["run"] == "running" and s["pid"]), signal.SIGKILL)
    assert pulses(chid, 1) == [(1, 10)]
    no_pulse(chid)


def test_donow_executes_at_once(ham, tmp_path):
    ehdl = attach_sleeper("now")
    marker = tmp_path / "now"
    ham_action_execute(ham_condition(ehdl, CONDDEATH, "death", 0), "mount", f"/bin/touch {marker}", HACTIONDONOW)  # noqa: F405
    wait_for(marker.exists, what="the DONOW execute")


def test_notify_to_a_dead_target_fails_and_is_pruned(ham):
    dead = subprocess.Popen(["/bin/true"])
    dead.wait()
    ehdl = attach_sleeper("orphan", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", HCONDKEEPONEMPTY)  # noqa: F405
    ham_action_notify_pulse(death, "lost", ND_LOCAL_NODE, dead.pid, 1, 1, 1, 0)  # noqa: F405
    ham_action_notify_pulse(death, "kept", ND_LOCAL_NODE, dead.pid, 1, 1, 1, HACTIONKEEPONFAIL)  # noqa: F405
    os.kill(pid_of("orphan"), signal.SIGKILL)
    wait_for(lambda: [a["name"] for a in entity_status("orphan")["conditions"][0]["actions"]] == ["kept"],
             what="pruning")


def test_notify_signal_carries_the_value(ham):
    receiver = SignalReceiver([signal.SIGRTMIN + 1])
    try:
        ehdl = attach_sleeper("nfs2", HENTITYKEEPONDEATH)  # noqa: F405
        ham_action_notify_signal(ham_condition(ehdl, CONDDEATH, "DeathSep", HCONDINDEPENDENT),  # noqa: F405
                                 "sig", ND_LOCAL_NODE, os.getpid(), signal.SIGRTMIN + 1, 0, 18, 0)
        os.kill(pid_of("nfs2"), signal.SIGKILL)
        got = receiver.read()
        assert (got.signo, got.value, got.code) == (signal.SIGRTMIN + 1, 18, -1)
        assert got.pid == ham.proc.pid
    finally:
        receiver.close()


# ---- control, handles, errors ---------------------------------------------------------------

def test_disable_enable_recursive_and_flags(ham, chid):
    ehdl = attach_sleeper("ctl", HENTITYKEEPONDEATH)  # noqa: F405
    death = ham_condition(ehdl, CONDDEATH, "death", 0)  # noqa: F405
    ahdl = notify(death, "n", chid, 1, 0)
    ham_action_control(ahdl, HDISABLE, 0)  # noqa: F405
    ham_condition_control(death, HADDFLAGS, HCONDKEEPONEMPTY)  # noqa: F405
    assert ham_condition_control(death, HGETFLAGS, 0) == HCONDKEEPONEMPTY  # noqa: F405
    with pytest.raises(OSError) as bad:
        ham_action_control(ahdl, HADDFLAGS, HACTIONDONOW)  # noqa: F405
    assert bad.value.errno == errno.EINVAL
    ham_entity_control(ehdl, HDISABLE, HRECURSE)  # noqa: F405
    ham_entity_control(ehdl, HENABLE, 0)  # entity back on, the action still off  # noqa: F405
    os.kill(pid_of("ctl"), signal.SIGKILL)
    no_pulse(chid, 0.6)
    assert not entity_status("ctl")["conditions"][0]["actions"][0]["enabled"]


def test_stale_handles_give_enoent_and_names_are_checked(ham):
    ehdl = attach_sleeper("temp")
    chdl = ham_condition(ehdl, CONDDEATH, "death", 0)  # noqa: F405
    ham_condition_remove(chdl, 0)  # noqa: F405
    for call in (lambda: ham_condition_control(chdl, HENABLE, 0),  # noqa: F405
                 lambda: ham_condition_handle(ND_LOCAL_NODE, "temp", "death", 0),  # noqa: F405
                 lambda: ham_entity_handle(ND_LOCAL_NODE, "nope", 0)):  # noqa: F405
        with pytest.raises(OSError) as bad:
            call()
        assert bad.value.errno == errno.ENOENT
    for name, err in (("a/b", errno.EINVAL), ("x" * 300, errno.ENAMETOOLONG), ("", errno.EINVAL)):
        with pytest.raises(OSError) as bad:
            ham_entity(name, ND_LOCAL_NODE, 0)  # noqa: F405
        assert bad.value.errno == err
    with pytest.raises(OSError) as bad:
        ham_condition(ehdl, CONDDEATH, "d", 0) and ham_action_restart(  # noqa: F405
            ham_condition(ehdl, CONDRESTART, "r", 0), "x", SLEEP, 0)  # noqa: F405
    assert bad.value.errno == errno.EINVAL  # restart only in a death condition
    with pytest.raises(OSError) as bad:
        ham_attach("n", 1, -1, SLEEP, 0)  # noqa: F405
    assert bad.value.errno == errno.EINVAL  # other nodes


def test_verbosity(ham):
    ham_verbose(None, VERBOSE_SET, 2)  # noqa: F405
    ham_verbose(None, VERBOSE_SET_INCR, 0)  # noqa: F405
    assert ham_verbose(None, VERBOSE_GET, 0) == 3  # noqa: F405


# ---- the daemon -----------------------------------------------------------------------------

def test_persistence_across_stop_and_start_readopts(ham, chid, tmp_path):
    ehdl = attach_sleeper("db")
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
    ham_action_restart(death, "restart", SLEEP, HREARMAFTERRESTART)  # noqa: F405
    notify(death, "n", chid, 1)
    ham_verbose(None, VERBOSE_SET, 5)  # noqa: F405
    pid = pid_of("db")
    ham.spawned.add(pid)
    before = entity_status("db")
    ham_stop()  # noqa: F405
    ham.proc.wait(10)
    os.kill(pid, 0)  # the entity runs on without ham
    ham.start(verbosity=None)
    after = entity_status("db")
    assert after["pid"] == pid and after["conditions"] == before["conditions"]
    assert ham_verbose(None, VERBOSE_GET, 0) == 5  # noqa: F405  (no -V: the state's)
    assert _instances("db") == [pid]  # re-adopted, not started a second time
    ham_stop()  # noqa: F405
    ham.proc.wait(10)
    ham.start(verbosity="2")
    assert ham_verbose(None, VERBOSE_GET, 0) == 2  # noqa: F405  (the command line wins)
    os.kill(pid, signal.SIGKILL)  # the new ham sees the death of what it re-adopted
    assert pulses(chid, 1) == [(1, 10)]
    assert wait_for(lambda: (s := entity_status("db"))["pid"] not in (None, pid) and s["run"] == "running")
    assert "Re-adopted db" in ham.read_log()


def test_a_restart_cut_short_by_a_stop_is_finished_by_the_next_ham(ham):
    ehdl = attach_sleeper("midway")
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
    ham_action_waitfor(death, "settle", None, 1500, HREARMAFTERRESTART)  # noqa: F405
    ham_action_restart(death, "restart", SLEEP, HREARMAFTERRESTART)  # noqa: F405
    os.kill(pid_of("midway"), signal.SIGKILL)
    wait_for(lambda: entity_status("midway")["run"] == "dead", what="the death")
    ham_stop()  # noqa: F405  (while the waitfor holds the restart back)
    ham.proc.wait(10)
    ham.start()
    wait_for(lambda: entity_status("midway")["restarts"] == 1, what="the restart")
    assert _instances("midway") == [pid_of("midway")] and entity_status("midway")["run"] == "running"
    assert "finishing the handling of its death" in ham.read_log()


def _instances(entity: str) -> list[int]:
    """Every process ham started for entity (they carry HAM_ENTITY=<name>)."""
    tag, found = f"HAM_ENTITY={entity}".encode(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if tag in environ.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_second_ham_refuses_and_signals_are_ignored(ham):
    second = subprocess.run([sys.executable, "-m", "hamtools", "ham", "--foreground", "--runtime-dir", ham.dir],
                            env=ham.env(), capture_output=True, text=True, timeout=20)
    assert second.returncode == 1 and "already running" in second.stderr
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGPIPE):
        ham.proc.send_signal(signum)
    time.sleep(0.3)
    assert ham.proc.poll() is None
    assert ham_verbose(None, VERBOSE_GET, 0) >= 0  # noqa: F405


def test_journal_records_conditions_with_counts(ham, chid):
    ehdl = attach_sleeper("logged", HENTITYKEEPONDEATH)  # noqa: F405
    notify(ham_condition(ehdl, CONDDEATH, "death", 0), "n", chid, 1)  # noqa: F405
    os.kill(pid_of("logged"), signal.SIGKILL)
    pulses(chid, 1)
    fired = [e for e in ham.events() if e["what"] == "CONDDEATH"]
    assert fired[0]["entity"] == "logged" and fired[0]["deaths"] == 1 and fired[0]["fired"] == 1


def test_a_start_window_never_holds_other_entities_restarts(ham, chid):
    for name in ("a", "b"):
        ehdl = attach_sleeper(name)
        death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)  # noqa: F405
        ham_action_restart(death, "restart", SLEEP, HREARMAFTERRESTART)  # noqa: F405
    first_a, first_b = pid_of("a"), pid_of("b")
    started = time.monotonic()
    os.kill(first_a, signal.SIGKILL)
    os.kill(first_b, signal.SIGKILL)
    # both respawned at once: b's restart did not wait for a's 1 s start window
    wait_for(lambda: entity_status("a")["pid"] not in (None, first_a)
             and entity_status("b")["pid"] not in (None, first_b), what="both respawned")
    assert time.monotonic() - started < 0.8


def test_an_answer_longer_than_a_frame_arrives_whole(ham):
    """ham_status of a big tree: many MORE frames, more than the socket buffer holds at once."""
    ham_connect(0)  # noqa: F405
    try:
        for n in range(600):
            placeholder = ham_entity(f"placeholder-with-a-long-name-{n:04d}", ND_LOCAL_NODE, 0)  # noqa: F405
            death = ham_condition(placeholder, CONDDEATH, "death-" + "x" * 100, 0)  # noqa: F405
            ham_action_log(death, "say", "y" * 400, 0, 0, 0)  # noqa: F405
        status = ham_status()  # noqa: F405
    finally:
        ham_disconnect(0)  # noqa: F405
    import json

    assert len(json.dumps(status)) > 8 * 64 * 1024
    names = [e["name"] for e in status["entities"]]
    assert names[-1] == "placeholder-with-a-long-name-0599" and len(names) == 601
