"""scripts/bench --short, as CI runs it (issue 9, item 5): every part of the one-command suite
runs and prints its figures. It fails only when a part crashes, never on a number (the
figures are the README's, from a full run on a quiet machine)."""

import os
import subprocess
import sys

from tests.conftest import ROOT

# What each part prints once it has measured something (no numbers asserted).
PRINTED = {
    "peers": "| pidfd loop (limit) |",
    "notify": "ham death -> notify pulse received: median",
    "startup": "| /usr/bin/python3 |",
    "wdt": "`wdt info` |",
    "sockmon": "sockmon (EOF/pidfd, no polling)",
    "heartbeat": "ingest:",
    "takeover": "takeover",
}


def test_the_short_bench_runs_every_part_and_prints_its_figures(hamtools_zip, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench"), "--short",
                           "--out", str(tmp_path / "report")], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, HAM_BENCH_WORK=str(tmp_path / "work")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for part, text in PRINTED.items():
        assert text in done.stdout, f"{part} printed nothing like {text!r}:\n{done.stdout}"
    if os.geteuid() == 0:
        assert "flood: " in done.stdout and "offered by an unauthorised uid" in done.stdout
    for peer in ("supervisord", "runsv", "s6-supervise"):
        assert f"| {peer} |" in done.stdout or f"({peer}: not installed" in done.stdout
    assert "7 parts ran, 0 failed" in done.stdout
    assert (tmp_path / "report").read_text().startswith("# scripts/bench --short")
