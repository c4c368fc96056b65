"""ham booted from the demo board's configuration files, from the built zipapp."""

import os
import signal
import subprocess

import pytest

from hamtools.ham import ham_status, ham_stop
from tests.conftest import ROOT
from tests.hamfix import entity_status, kill_leftovers, wait_for

BOARD = ROOT / "scripts" / "examples"


@pytest.fixture
def boot(tmp_path, monkeypatch, hamtools_zip, clean_python):
    run_dir = tmp_path / "run"
    monkeypatch.setenv("HAM_RUNTIME_DIR", str(run_dir))
    env = dict(os.environ, HAM_RUNTIME_DIR=str(run_dir), HAMTOOLS=str(hamtools_zip),
               PATH=f"{os.path.dirname(clean_python)}:{os.environ['PATH']}")

    def start(*configs):
        return subprocess.run([clean_python, "-I", str(hamtools_zip), "ham", "-f", str(tmp_path / "ham.log"),
                               "--runtime-dir", str(run_dir), *(f"--config={c}" for c in configs)],
                              env=env, capture_output=True, text=True, timeout=30)

    start.env = env
    yield start
    try:
        pids = [e["pid"] for e in ham_status()["entities"] if e["pid"]]
        ham_stop(stop_entities=True)
        wait_for(lambda: not (run_dir / "control").exists(), what="ham gone")
    except OSError:
        pids = []
    kill_leftovers(pids)


@pytest.mark.parametrize("config, strategy", [("board.toml", "rest_for_one"), ("board.conf", "cascade")])
def test_the_demo_board_boots_and_its_group_strategy_works(boot, config, strategy):
    # a startup file defines no groups: its "chain" gets the default strategy, cascade
    done = boot(BOARD / config)
    assert done.returncode == 0, done.stderr
    names = {"steady", "flaky", "follower", "worker"}
    wait_for(lambda: {e["name"] for e in ham_status()["entities"] if e["run"] == "running"} >= names,
             what="every service running")
    assert ham_status()["groups"]["chain"]["strategy"] == strategy
    assert entity_status("worker")["heartbeat_state"] is not None
    follower = entity_status("follower")["pid"]
    # flaky segfaults 2 s after each start
    wait_for(lambda: entity_status("flaky")["restarts"] >= 1, timeout=15, what="flaky restarted")
    if strategy == "rest_for_one":  # follower, started after flaky, restarts with it
        wait_for(lambda: entity_status("follower")["pid"] not in (None, follower), timeout=15,
                 what="follower restarted with flaky")
    else:  # cascade: one member failing, even again and again, restarts only itself
        wait_for(lambda: entity_status("flaky")["restarts"] >= 2, timeout=15, what="flaky restarted twice")
        assert entity_status("follower")["pid"] == follower


def test_a_bad_configuration_starts_nothing(boot, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[service.x]\ncommand = "/bin/sleep 600"\nnice = 40\n')
    done = boot(bad)
    assert done.returncode == 1
    assert done.stderr == f"ham: {bad}:1: nice: must be between -20 and 19, not 40\n"
    assert not (tmp_path / "run" / "control").exists()


def test_ready_notify_gates_the_followers_until_ready_1(boot, tmp_path):
    conf = tmp_path / "notify.toml"
    conf.write_text('[service.x]\ncommand = "/bin/sh -c \'sleep 1; systemd-notify --ready; exec sleep 600\'"\n'
                    'ready = "notify"\n\n[service.y]\ncommand = "/bin/sleep 600"\nafter = ["x"]\n')
    done = boot(conf)
    assert done.returncode == 0, done.stderr
    assert entity_status("x")["run"] == "running" and entity_status("y")["run"] == "stopped"
    wait_for(lambda: entity_status("y")["run"] == "running", what="y, once x said READY=1")
    assert entity_status("x")["ready"]


def test_hamctl_reload_applies_a_changed_file(boot, tmp_path, hamtools_zip, clean_python):
    conf = tmp_path / "board.conf"
    conf.write_text("NAME=a /bin/sleep 600\nNAME=b /bin/sleep 600\n")
    assert boot(conf).returncode == 0
    a = wait_for(lambda: entity_status("a") and entity_status("a")["pid"])
    conf.write_text("NAME=a /bin/sleep 600\nNAME=c /bin/sleep 600\n")
    done = subprocess.run([clean_python, "-I", str(hamtools_zip), "hamctl", "reload"], env=boot.env,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "added 1 (c), removed 1 (b), changed 0, unchanged 1\n"
    wait_for(lambda: entity_status("c") and entity_status("c")["run"] == "running", what="c")
    assert entity_status("a")["pid"] == a
    conf.write_text("NAME=a RESTART=sometimes /bin/sleep 600\n")
    refused = subprocess.run([clean_python, "-I", str(hamtools_zip), "hamctl", "reload"], env=boot.env,
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and f"{conf}:1: RESTART" in refused.stderr
    assert entity_status("c") is not None  # nothing changed


def test_attributes_and_output_capture_through_ham(boot, tmp_path):
    out = tmp_path / "svc.log"
    conf = tmp_path / "attrs.toml"
    conf.write_text(f"""
[service.probe]
command = "/bin/sh -c 'echo cwd=$(pwd) foo=$FOO umask=$(umask) entity=$HAM_ENTITY; exec sleep 600'"
cwd = "{tmp_path}"
env = {{ FOO = "bar" }}
umask = "027"
nice = 5
stdout = "file:{out}"
""")
    assert boot(conf).returncode == 0
    pid = wait_for(lambda: entity_status("probe") and entity_status("probe")["pid"])
    wait_for(lambda: out.exists() and out.read_text().strip(), what="captured output")
    assert out.read_text().split() == [f"cwd={tmp_path}", "foo=bar", "umask=0027", "entity=probe"]
    with open(f"/proc/{pid}/stat") as stat:
        assert int(stat.read().rsplit(")", 1)[1].split()[16]) == 5  # nice


TREES = """
[service.victim]
command = "/bin/sleep 600"
restart = "never"

[[global.condition]]
name = "anydeath"
type = "CONDDEATH"
flags = ["HREARMAFTERRESTART"]

[[global.condition.action]]
name = "mark"
kind = "execute"
params = {{ line = "/bin/touch {died}" }}
flags = ["HREARMAFTERRESTART"]

[placeholder.media]
[[placeholder.media.condition]]
name = "here"
type = "CONDATTACH"

[[placeholder.media.condition.action]]
name = "mark"
kind = "execute"
params = {{ line = "/bin/touch {attached}" }}
"""


def test_global_conditions_and_placeholders_from_a_file_and_their_reload(boot, tmp_path, hamtools_zip,
                                                                         clean_python):
    died, attached, conf = tmp_path / "died", tmp_path / "attached", tmp_path / "trees.toml"
    text = TREES.format(died=died, attached=attached)
    conf.write_text(text + "\n[placeholder.spare]\n")
    assert boot(conf).returncode == 0

    def hamctl(*args):
        return subprocess.run([clean_python, "-I", str(hamtools_zip), "hamctl", *args], env=boot.env,
                              capture_output=True, text=True, timeout=30)

    def global_conditions():
        return {c["name"]: c for c in entity_status(".__global")["conditions"]}

    assert entity_status("media")["type"] == entity_status("spare")["type"] == "placeholder"
    os.kill(wait_for(lambda: entity_status("victim")["pid"]), signal.SIGKILL)
    wait_for(died.exists, what="the global condition's action")
    assert hamctl("attach", "media", "--", "/bin/sleep", "600").returncode == 0
    wait_for(attached.exists, what="the placeholder's CONDATTACH action")
    media = entity_status("media")["pid"]
    # reload: the filled placeholder stays, the one the file dropped goes, the unchanged global
    # condition keeps its count, a new one comes
    conf.write_text(text + '\n[[global.condition]]\nname = "second"\ntype = "CONDDETACH"\n')
    done = hamctl("reload")
    assert done.returncode == 0, done.stderr
    assert entity_status("spare") is None and entity_status("media")["pid"] == media
    assert {name: c["fired"] for name, c in global_conditions().items()} == {"anydeath": 1, "second": 0}
    # a name the API holds: refused at the file's line, nothing changed
    from hamtools.ham import ham_condition_raise, ham_entity_handle

    ham_condition_raise(ham_entity_handle(0, None), "api", 1, 0, 0, 0)
    conf.write_text(text + '\n[[global.condition]]\nname = "api"\ntype = "CONDDETACH"\n')
    refused = hamctl("reload")
    line = text.count("\n") + 2  # the [[global.condition]] header after the blank line
    assert refused.returncode == 1 and refused.stderr == (
        f"hamctl: {conf}:{line}: global condition 'api': a condition of that name already exists "
        "(made through the API or hamctl)\n")
    assert set(global_conditions()) == {"anydeath", "second", "api"}
    assert global_conditions()["api"]["type"] == "CONDRAISE"
