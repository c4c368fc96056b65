"""hamctl from the built zipapp against a real ham: SPEC §10's status JSON, the /proc/ham view,
the journal, QNX hamctrl's options, exit codes."""

import json
import os
import signal
import subprocess
import time

import pytest

from hamtools.ham import (CONDANY, CONDDEATH, HENTITYKEEPONDEATH, HREARMAFTERRESTART, ND_LOCAL_NODE,
                          ham_action_notify_pulse, ham_action_restart, ham_attach, ham_condition)
from hamtools.neutrino import ChannelCreate, ChannelDestroy, MsgReceivePulse
from tests.hamfix import entity_status, ham, wait_for  # noqa: F401


@pytest.fixture
def hamctl(ham, hamtools_zip, clean_python):
    def run(*args):
        return subprocess.run([*run.argv, *map(str, args)], env=ham.env(), capture_output=True, text=True,
                              timeout=30)
    run.argv = [clean_python, "-I", str(hamtools_zip), "hamctl"]
    return run


def board():
    ehdl = ham_attach("web", ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    ham_action_restart(death, "restart", "/bin/sleep 600", HREARMAFTERRESTART)
    return ehdl


def test_status_json_is_spec_shaped(ham, hamctl):
    board()
    done = hamctl("status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert {"ham_pid", "guardian_pid", "ham_failures", "verbosity", "entities"} <= data.keys()
    assert data["ham_pid"] == ham.proc.pid and data["ham_failures"] == 0
    by_name = {e["name"]: e for e in data["entities"]}
    assert by_name[".__global"]["type"] == "global"
    web = by_name["web"]
    for key, kind in (("name", str), ("type", str), ("pid", int), ("run", str), ("state", int),
                      ("restarts", int), ("enabled", bool), ("conditions", list)):
        assert isinstance(web[key], kind), key
    assert web["type"] == "attached" and web["run"] == "running" and web["heartbeat_state"] is None
    assert web["conditions"] == [{
        "name": "death", "type": "CONDDEATH", "flags": ["HREARMAFTERRESTART"], "enabled": True,
        "params": {}, "fired": 0,
        "actions": [{"name": "restart", "kind": "restart", "flags": ["HREARMAFTERRESTART"],
                     "enabled": True, "params": {"line": "/bin/sleep 600"}, "runs": 0,
                     "failures": 0, "fails": []}]}]


def fields(text: str) -> dict:
    return {key.strip(): value.strip() for key, value in (line.split(": ", 1) for line in text.splitlines())}


def test_status_table_ls_and_info(ham, hamctl):
    board()
    table = hamctl("status").stdout.splitlines()
    assert table[1].split() == ["NAME", "TYPE", "PID", "RUN", "STATE", "HEARTBEAT", "RESTARTS", "CONDITIONS"]
    assert any(line.split()[:2] == ["web", "attached"] for line in table)
    assert hamctl("ls").stdout.split() == [".info", ".__global/", "web/"]
    assert hamctl("ls", "web").stdout.split() == [".info", "death/"]
    assert hamctl("ls", "web/death").stdout.split() == [".info", "restart"]
    info = fields(hamctl("info", "web").stdout)
    assert info["Entity type"] == "ATTACHED" and info["Num Restarts"] == "0"
    top = fields(hamctl("info").stdout)
    assert top["Ham Pid"] == str(ham.proc.pid) and top["Num Entities"] == "2"
    action = hamctl("info", "web/death/restart").stdout
    assert "Restart Line      : /bin/sleep 600" in action and "Action ReArm      : ON" in action
    missing = hamctl("info", "web/nope")
    assert missing.returncode == 3 and missing.stderr == "hamctl: web/nope: no such entity, condition or action\n"


def test_events_and_verbosity_and_hamctrl_options(ham, hamctl):
    board()
    os.kill(entity_status("web")["pid"], signal.SIGKILL)
    wait_for(lambda: entity_status("web")["restarts"] == 1, what="the restart")
    events = hamctl("events", "--json").stdout.splitlines()
    assert any(json.loads(line)["what"] == "CONDDEATH" for line in events)
    assert "web/death CONDDEATH" in hamctl("events").stdout
    assert hamctl("verbose", "set", "2").stdout == "2\n"
    assert hamctl("+verbose").stdout == "Verbosity of HAM is now 3 on local node\n"
    assert hamctl("-verbose").stdout == "Verbosity of HAM is now 2 on local node\n"
    assert hamctl("=verbose").stdout == "Verbosity of HAM is now 2 on local node\n"
    node = hamctl("-node", "other", "=verbose")
    assert node.returncode == 1 and "only the local node" in node.stderr
    assert hamctl("verbose", "sideways").returncode == 2


def test_stop_waits_for_ham_and_then_exit_3(ham, hamctl):
    pid = board() and entity_status("web")["pid"]
    ham.spawned.add(pid)
    assert hamctl("-stop").returncode == 0
    ham.proc.wait(10)
    os.kill(pid, 0)  # the entity runs on
    gone = hamctl("status")
    assert gone.returncode == 3 and gone.stderr.startswith("hamctl: ham is not running")


def test_condany_fires_on_every_event(ham):
    chid = ChannelCreate(0)
    try:
        ehdl = ham_attach("anything", ND_LOCAL_NODE, -1, "/bin/sleep 600", HENTITYKEEPONDEATH)
        ham_action_notify_pulse(ham_condition(ehdl, CONDANY, "all", 0), "n", ND_LOCAL_NODE,
                                os.getpid(), chid, 9, 0, 0)
        from hamtools.ham import ham_entity_condition_state

        ham_entity_condition_state(ehdl, 4, 0)
        os.kill(entity_status("anything")["pid"], signal.SIGKILL)
        assert [MsgReceivePulse(chid, timeout=10).code for _ in range(2)] == [9, 9]
    finally:
        ChannelDestroy(chid)


def test_idle_ham_does_not_wake_up(ham):
    board()
    time.sleep(0.5)  # the state save after the changes is done
    def switches():
        with open(f"/proc/{ham.proc.pid}/status") as status:
            return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
    before = switches()
    time.sleep(1.5)
    assert switches() == before


def test_the_api_from_a_shell(ham, hamctl, tmp_path):
    marker = tmp_path / "clear.ran"
    assert hamctl("attach", "svc", "--", "/bin/sleep", "600").returncode == 0
    assert hamctl("condition", "svc", "death", "death", "--flag", "HREARMAFTERRESTART").returncode == 0
    assert hamctl("action", "svc", "death", "restart", "restart", "/bin/sleep 601",
                  "--flag", "rearmafterrestart").returncode == 0
    assert hamctl("fail", "svc", "death", "restart", "clear", "execute", f"/bin/touch {marker}").returncode == 0
    assert hamctl("action", "svc", "death", "note", "log", "svc died", "1", "--flag", "HREARMAFTERRESTART").returncode == 0
    tree = {c["name"]: [a["name"] for a in c["actions"]] for c in entity_status("svc")["conditions"]}
    assert tree == {"death": ["restart", "note"]}
    first = entity_status("svc")["pid"]
    assert hamctl("lookup", "svc").stdout == f"{first}\n"
    os.kill(first, signal.SIGKILL)
    second = hamctl("lookup", "svc", "--wait", "5")  # across the restart
    assert second.returncode == 0 and int(second.stdout) != first
    assert hamctl("check", "svc").returncode == 0
    assert hamctl("disable", "svc/death/note").returncode == 0
    assert not entity_status("svc")["conditions"][0]["actions"][1]["enabled"]
    assert hamctl("remove", "svc/death/note").returncode == 0
    assert hamctl("remove", "svc/death/restart/clear").returncode == 0
    assert entity_status("svc")["conditions"][0]["actions"][0]["fails"] == []


def test_start_stop_restart_one_entity_and_check(ham, hamctl):
    assert hamctl("attach", "one", "--", "/bin/sleep", "600").returncode == 0
    pid = entity_status("one")["pid"]
    assert hamctl("stop", "one").returncode == 0
    wait_for(lambda: entity_status("one")["run"] == "stopped", what="stopped")
    stopped = hamctl("check", "one")
    assert (stopped.returncode, stopped.stdout) == (1, "one: unhealthy: not running (stopped)\n")
    assert hamctl("start", "one").returncode == 0
    again = wait_for(lambda: entity_status("one")["pid"])
    assert again != pid and hamctl("check", "one").returncode == 0
    assert hamctl("restart", "one").returncode == 0
    assert wait_for(lambda: (p := entity_status("one")["pid"]) not in (None, again) and p)
    assert hamctl("check", "nobody").returncode == 3
    assert hamctl("start", "one", "extra").returncode == 2


def test_state_raise_and_usage_errors(ham, hamctl):
    chid = ChannelCreate(0)
    try:
        assert hamctl("attach", "media", "--", "/bin/sleep", "600").returncode == 0
        ham_action_notify_pulse(ham_condition(_handle("media"), CONDANY, "all", 0),
                                "n", ND_LOCAL_NODE, os.getpid(), chid, 5, 0, 0)
        assert hamctl("state", "media", "2").returncode == 0
        assert hamctl("raise", "media", "1", "2", "3").returncode == 0
        assert [MsgReceivePulse(chid, timeout=10).code for _ in range(2)] == [5, 5]
    finally:
        ChannelDestroy(chid)
    assert hamctl("condition", "media", "c", "sideways").returncode == 2
    assert hamctl("action", "media", "all", "x", "notify_pulse", "1", "2").returncode == 2
    assert hamctl("condition", "media", "c2", "death", "--flag", "HBOGUS").returncode == 2
    assert hamctl("attach", "both", "--pid", "1", "--", "/bin/true").returncode == 2
    missing = hamctl("detach", "nobody")
    assert missing.returncode == 3 and "no entity 'nobody'" in missing.stderr


def _handle(name):
    from hamtools.ham import Handle

    return Handle(name)


def test_policy_through_hamctl_set(ham, hamctl, tmp_path):
    assert hamctl("attach", "svc", "--", "/bin/sleep", "600").returncode == 0
    done = hamctl("set", "svc", "restart=on-failure", "max_restarts=2", "backoff_initial=50ms",
                  'after=[]', f"cwd={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["restart=on-failure", "max_restarts=2", "backoff_initial=0.05", "after=[]",
                                   f"cwd={tmp_path}"]
    first = entity_status("svc")["pid"]
    os.kill(first, signal.SIGKILL)  # a service now: its policy restarts it, in its new cwd
    second = wait_for(lambda: (p := entity_status("svc")["pid"]) not in (None, first) and p)
    assert os.readlink(f"/proc/{second}/cwd") == str(tmp_path)
    bad = hamctl("set", "svc", "restart=sometimes")
    assert bad.returncode == 1 and "restart" in bad.stderr
    assert hamctl("set", "svc", "nonsense").returncode == 2
    assert hamctl("set", "svc", "name=other").returncode == 1


def test_group_policy_through_hamctl_set_group_and_kept_across_a_restart_of_ham(ham, hamctl):
    for name in ("a", "b"):
        assert hamctl("attach", name, "--", "/bin/sleep", "600").returncode == 0
        assert hamctl("set", name, "group=g").returncode == 0
    done = hamctl("set-group", "g", "strategy=one_for_all", "window=30s")
    assert (done.returncode, done.stdout) == (0, "strategy=one_for_all window=30.0\n"), done.stderr
    a, b = entity_status("a")["pid"], entity_status("b")["pid"]
    os.kill(a, signal.SIGKILL)
    assert wait_for(lambda: (p := entity_status("b")["pid"]) not in (None, b) and p)
    bad = hamctl("set-group", "g", "strategy=all")
    assert bad.returncode == 1 and bad.stderr.startswith("hamctl: ") and "strategy: must be" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    assert hamctl("set-group", "nope", "window=1").returncode == 1
    assert hamctl("set-group", "g", "nonsense").returncode == 2
    ham.spawned |= {e["pid"] for e in json.loads(hamctl("status", "--json").stdout)["entities"] if e["pid"]}
    ham.stop()
    ham.start()
    assert json.loads(hamctl("status", "--json").stdout)["groups"]["g"] == {
        "strategy": "one_for_all", "window": 30.0, "source": "hamctl set"}


def test_escalate_without_a_group_is_refused_by_hamctl_set(ham, hamctl):
    assert hamctl("attach", "svc", "--", "/bin/sleep", "600").returncode == 0
    bad = hamctl("set", "svc", "on_limit=escalate")
    assert bad.returncode == 1
    assert bad.stderr == "hamctl: hamctl set: on_limit = escalate restarts the service's group: set group too\n"
    assert entity_status("svc")["service"] is False  # nothing changed


def pulses(chid, timeout=0.5) -> list[int]:
    """The codes of the pulses that arrive until none comes for `timeout` seconds."""
    codes = []
    while True:
        try:
            codes.append(MsgReceivePulse(chid, timeout=timeout).code)
        except (OSError, TimeoutError):
            return codes


def notify(hamctl, path, chid, code):
    entity, cond = path.split("/")
    done = hamctl("action", entity, cond, f"tell{code}", "notify_pulse", os.getpid(), chid, code, 0,
                  "--flag", "HREARMAFTERRESTART")
    assert done.returncode == 0, done.stderr


def test_state_and_raise_conditions_from_a_shell(ham, hamctl):
    chid = ChannelCreate(0)
    try:
        assert hamctl("attach", "media", "--", "/bin/sleep", "600").returncode == 0
        assert hamctl("condition", "media", "ok", "state", "--from", "1", "--to", "2").returncode == 0
        assert hamctl("condition", "media", "high", "CONDSTATE", "--to", "0b1100",
                      "--flag", "HCONDSTATETOSET").returncode == 0  # entering 2 or 3
        assert hamctl("condition", "media", "notlow", "state", "--to", "0x3", "--flag", "HCONDSTATETOSET",
                      "--flag", "HCONDSTATETOINV").returncode == 0  # entering anything but 0 or 1
        assert hamctl("condition", "media", "fault", "raise", "--type", "1", "--class", "2").returncode == 0
        for path, code in (("media/ok", 1), ("media/high", 2), ("media/notlow", 3), ("media/fault", 4)):
            notify(hamctl, path, chid, code)
        conds = {c["name"]: c for c in entity_status("media")["conditions"]}
        assert (conds["ok"]["type"], conds["ok"]["params"]) == ("CONDSTATE", {"from": 1, "to": 2})
        assert conds["notlow"]["flags"] == ["HCONDSTATETOSET", "HCONDSTATETOINV"]
        assert conds["fault"]["params"] == {"rtype": 1, "rclass": 2, "rseverity": 0}
        assert hamctl("state", "media", "1").returncode == 0  # 0 -> 1: none of them
        assert pulses(chid) == []
        assert hamctl("state", "media", "2").returncode == 0  # 1 -> 2: ok, high, notlow
        assert sorted(pulses(chid)) == [1, 2, 3]
        assert hamctl("raise", "media", "1", "2", "9").returncode == 0  # any severity
        assert hamctl("raise", "media", "1", "3", "9").returncode == 0  # another class: no
        assert pulses(chid) == [4]
    finally:
        ChannelDestroy(chid)
    assert hamctl("condition", "media", "x", "death", "--from", "1").returncode == 2
    assert hamctl("condition", "media", "x", "raise", "--to", "1").returncode == 2
    assert hamctl("condition", "media", "x", "state", "--to", "two").returncode == 2


def test_remove_an_entity_from_monitoring(ham, hamctl):
    chid = ChannelCreate(0)
    try:
        assert hamctl("attach", "a", "--", "/bin/sleep", "600").returncode == 0
        pid = entity_status("a")["pid"]
        ham.spawned.add(pid)
        assert hamctl("condition", "a", "gone", "detach").returncode == 0
        notify(hamctl, "a/gone", chid, 6)
        assert hamctl("remove", "a").returncode == 0
        assert pulses(chid) == [6]  # as ham_detach: CONDDETACH fired
        assert entity_status("a") is None
        os.kill(pid, 0)  # and the process runs on
    finally:
        ChannelDestroy(chid)
    from hamtools.ham import ham_entity

    ham_entity("later", ND_LOCAL_NODE, 0)
    assert entity_status("later")["type"] == "placeholder"
    assert hamctl("remove", "later").returncode == 0 and entity_status("later") is None
    glob = hamctl("remove", ".__global")
    assert glob.returncode == 1 and glob.stderr == "hamctl: the global entity cannot be removed\n"
    assert hamctl("remove", "nobody").returncode == 3


def test_enable_disable_recursive_detach_and_remove_a_condition(ham, hamctl):
    board()
    assert hamctl("condition", "web", "note", "death").returncode == 0
    assert hamctl("action", "web", "note", "say", "log", "web died").returncode == 0
    assert hamctl("disable", "web", "--recursive").returncode == 0
    web = entity_status("web")
    assert not web["enabled"] and not any(c["enabled"] for c in web["conditions"])
    assert not any(a["enabled"] for c in web["conditions"] for a in c["actions"])
    assert hamctl("enable", "web").returncode == 0  # not recursive: the tree stays disabled
    web = entity_status("web")
    assert web["enabled"] and not any(c["enabled"] for c in web["conditions"])
    assert hamctl("enable", "web", "-r").returncode == 0
    assert all(a["enabled"] for c in entity_status("web")["conditions"] for a in c["actions"])
    assert hamctl("remove", "web/note").returncode == 0
    assert [c["name"] for c in entity_status("web")["conditions"]] == ["death"]
    assert hamctl("remove", "web/note").returncode == 3  # gone: a stale path
    pid = entity_status("web")["pid"]
    ham.spawned.add(pid)
    done = hamctl("detach", "web")
    assert (done.returncode, done.stderr) == (0, "")
    assert entity_status("web") is None
    os.kill(pid, 0)


def test_verbose_up_down_get(ham, hamctl):
    assert hamctl("verbose", "get").stdout == "4\n"  # the fixture's -V 4
    assert hamctl("verbose", "up").stdout == "5\n"
    assert hamctl("verbose", "up", "3").stdout == "8\n"
    assert hamctl("verbose", "down", "2").stdout == "6\n"
    assert hamctl("verbose", "down").stdout == "5\n"
    assert hamctl("verbose", "get").stdout == "5\n"


def test_check_is_1_for_an_unhealthy_heartbeat_a_service_not_ready_and_a_disabled_entity(ham, hamctl, tmp_path):
    beater = ham.python("import time\nfrom hamtools.ham import *\n"
                        "ham_attach_self('beater', 100_000_000, 1, 3, 0)\nprint('up', flush=True)\n"
                        "time.sleep(600)\n")
    try:
        assert beater.stdout.readline() == "up\n"
        wait_for(lambda: entity_status("beater")["heartbeat_state"] == "missedhigh", what="missed beats")
        late = hamctl("check", "beater")
        assert (late.returncode, late.stdout) == (1, "beater: unhealthy: heartbeat missedhigh\n")
    finally:
        beater.kill()
        beater.wait()
    flag = tmp_path / "ready"
    assert hamctl("attach", "svc", "--", "/bin/sleep", "600").returncode == 0
    assert hamctl("set", "svc", f"ready=path:{flag}").returncode == 0
    assert hamctl("restart", "svc").returncode == 0  # readiness applies from its next start
    wait_for(lambda: entity_status("svc")["pid"] and entity_status("svc")["restarts"] == 1, what="restarted")
    waiting = hamctl("check", "svc")
    assert (waiting.returncode, waiting.stdout) == (1, "svc: unhealthy: not ready\n")
    flag.touch()
    wait_for(lambda: entity_status("svc")["ready"], what="ready")
    assert hamctl("check", "svc").returncode == 0
    assert hamctl("disable", "svc").returncode == 0
    off = hamctl("check", "svc")
    assert (off.returncode, off.stdout) == (1, "svc: unhealthy: disabled\n")


def test_lookup_wait_blocks_through_a_backoff(ham, hamctl):
    assert hamctl("attach", "svc", "--", "/bin/sleep", "600").returncode == 0
    assert hamctl("set", "svc", "backoff_initial=3", "safe_after=0").returncode == 0
    first = entity_status("svc")["pid"]
    os.kill(first, signal.SIGKILL)  # the first death restarts at once, the second backs off 3 s
    second = wait_for(lambda: (p := entity_status("svc")["pid"]) not in (None, first) and p)
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: entity_status("svc")["run"] == "backoff", what="backoff")
    lookup = subprocess.Popen([*hamctl.argv, "lookup", "svc", "--wait", "10"], env=ham.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    assert lookup.poll() is None and entity_status("svc")["run"] == "backoff"  # still waiting
    out, err = lookup.communicate(timeout=15)
    assert lookup.returncode == 0, err
    third = entity_status("svc")["pid"]
    assert int(out) == third and third not in (first, second)
