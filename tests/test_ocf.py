"""scripts/ocf/ham, the OCF resource agent, against a real ham: Debian's ocf-tester (from
resource-agents) runs its whole compliance sequence, then what Pacemaker relies on beyond it:
ham's local restart stays invisible to monitor, a service ham gave up on is a failure, and
without ham monitor tells "never ran" from "cannot know"."""

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.conftest import ROOT
from tests.hamfix import HamRunner, kill_leftovers, wait_for

AGENT = ROOT / "scripts" / "ocf" / "ham"
OCF_NOT_RUNNING, OCF_ERR_GENERIC = 7, 1


def needs(tool: str, package: str):
    if shutil.which(tool) is None:
        if os.environ.get("HAMTOOLS_VM_REQUIRED"):  # CI installs it: a skip would hide a failure
            pytest.fail(f"{tool} missing in CI")
        pytest.skip(f"needs {tool} (apt-get install {package})")


@pytest.fixture
def agent(tmp_path, hamtools_zip):
    """The agent installed as Pacemaker would (a world-readable directory: ocf-tester runs its
    meta-data as nobody), and a way to run one action with the resource's parameters."""
    needs("ocf-tester", "resource-agents")
    needs("xmllint", "libxml2-utils")
    where = tempfile.mkdtemp(prefix="ocf-")
    os.chmod(where, 0o755)
    installed = os.path.join(where, "ham")
    shutil.copy(AGENT, installed)
    os.chmod(installed, 0o755)
    os.makedirs(tmp_path / "run")
    ham = HamRunner(tmp_path / "run")
    params = {"service": "web", "command": "/bin/sleep 3600", "hamtools": str(hamtools_zip),
              "runtime_dir": ham.dir}

    def action(name: str, **extra) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "web",
               **{f"OCF_RESKEY_{k}": v for k, v in {**params, **extra}.items()}}
        return subprocess.run([installed, name], env=env, check=False, capture_output=True, text=True, timeout=60)

    action.path, action.ham, action.params = installed, ham, params
    yield action
    pids = set()
    if ham.answers():
        from hamtools.ham import ham_status

        os.environ["HAM_RUNTIME_DIR"] = ham.dir
        try:
            pids = {e["pid"] for e in ham_status()["entities"] if e["pid"]}
        finally:
            del os.environ["HAM_RUNTIME_DIR"]
    ham.stop()
    kill_leftovers(pids)
    shutil.rmtree(where)


def test_ocf_tester_passes(agent):
    agent.ham.start()
    done = subprocess.run(["ocf-tester", "-n", "web", *(f for k, v in agent.params.items() for f in ("-o", f"{k}={v}")),
                           agent.path], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"{agent.path} passed all tests" in done.stdout, done.stdout + done.stderr


def test_ham_restarts_locally_and_monitor_stays_healthy(agent, monkeypatch):
    agent.ham.start()
    monkeypatch.setenv("HAM_RUNTIME_DIR", agent.ham.dir)
    from tests.hamfix import entity_status

    assert agent("start").returncode == 0
    first = entity_status("web")["pid"]
    os.kill(first, 9)
    wait_for(lambda: (entity_status("web") or {}).get("pid") not in (None, first)
             and entity_status("web")["run"] == "running", what="ham's restart")
    assert agent("monitor").returncode == 0
    assert agent("stop").returncode == 0 and entity_status("web") is None  # out of ham


def test_a_service_ham_gave_up_on_fails_monitor(agent, monkeypatch):
    agent.ham.start()
    monkeypatch.setenv("HAM_RUNTIME_DIR", agent.ham.dir)
    from tests.hamfix import entity_status

    started = agent("start", command="/bin/sh -c 'sleep 1; exit 3'", settings="max_restarts=0")
    assert started.returncode == 0, started.stderr
    wait_for(lambda: entity_status("web")["run"] == "failed", what="ham giving up")
    failed = agent("monitor")
    assert failed.returncode == OCF_ERR_GENERIC and "not running (failed)" in failed.stderr
    assert agent("stop").returncode == 0 and entity_status("web") is None


def test_without_ham(agent, monkeypatch):
    probe = agent("monitor", CRM_meta_interval="0")
    assert probe.returncode == OCF_NOT_RUNNING  # no ham ever ran here: nothing can be running
    agent.ham.start()
    monkeypatch.setenv("HAM_RUNTIME_DIR", agent.ham.dir)
    from tests.hamfix import entity_status

    assert agent("start").returncode == 0
    left = entity_status("web")["pid"]
    try:
        subprocess.run([agent.params["hamtools"], "hamctl", "stop"], check=True, timeout=30)
        unknown = agent("monitor")  # ham left; its service runs on, unwatched
        assert unknown.returncode == OCF_ERR_GENERIC and "ham is not running" in unknown.stderr
        assert agent("stop").returncode == OCF_ERR_GENERIC  # no one to stop it: Pacemaker fences
    finally:
        kill_leftovers([left])


def test_bad_parameters(agent):
    assert agent("validate-all", service="a/b").returncode == 6  # OCF_ERR_CONFIGURED
    assert agent("validate-all", command="").returncode == 6
    assert agent("start", hamtools="/nonexistent/hamtools").returncode == 5  # OCF_ERR_INSTALLED
    assert agent("frobnicate").returncode == 3  # OCF_ERR_UNIMPLEMENTED
