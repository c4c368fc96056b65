"""The README's five-minute section, run as written: its worker script and its ham.toml
(taken from the README's heredocs), under a real ham; then its hang: SIGSTOP the worker, and
ham must find it hung (three beats missed), kill it and start it again."""

import os
import re
import signal
import subprocess

from tests.conftest import ROOT
from tests.hamfix import HamRunner, kill_leftovers, wait_for

SECTION = ROOT.joinpath("README.md").read_text().split("## Five minutes")[1].split("\n## ")[0]


def heredoc(path: str) -> str:
    return re.search(rf"cat > {re.escape(path)} <<'EOF'\n(.*?)\nEOF\n", SECTION, re.DOTALL)[1] + "\n"


def test_the_five_minute_worker_is_supervised_and_its_hang_is_caught(tmp_path, hamtools_zip):
    links = tmp_path / "bin"
    subprocess.run([str(hamtools_zip), "--install", "-s", str(links)], check=True, capture_output=True)
    worker = tmp_path / "worker.sh"
    worker.write_text(heredoc("/usr/local/bin/worker.sh"))
    worker.chmod(0o755)
    config = tmp_path / "ham.toml"
    config.write_text(heredoc("/etc/ham/ham.toml").replace("/usr/local/bin/worker.sh", str(worker)))
    os.makedirs(tmp_path / "run")
    ham = HamRunner(tmp_path / "run", ["--config", str(config)])
    ham.extra_env["PATH"] = f"{links}:{os.environ['PATH']}"  # the worker's `heartbeat`

    def hamctl(*args):
        return subprocess.run([str(links / "hamctl"), *args], env=ham.env(), check=False, capture_output=True, text=True,
                              timeout=30)

    ham.start()
    pids = set()
    try:
        wait_for(lambda: hamctl("check", "worker").returncode == 0, timeout=20, what="a healthy worker")
        first = int(hamctl("lookup", "worker").stdout)
        pids.add(first)
        os.kill(first, signal.SIGSTOP)
        wait_for(lambda: hamctl("lookup", "worker").stdout.strip() not in ("", str(first)), timeout=30,
                 what="the hung worker's restart")
        pids.add(int(hamctl("lookup", "worker").stdout))
        assert "RESTARTS" in hamctl("status").stdout
        assert re.search(r"worker\s+attached\s+\d+\s+running\s+\d+\s+\w+\s+1\b", hamctl("status").stdout)
        assert "worker hung note=SIGABRT" in hamctl("events").stdout
        assert "worker: hung" in ham.read_log()
    finally:
        ham.stop()
        kill_leftovers(pids)
