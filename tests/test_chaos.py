"""The short run of scripts/chaos (issue 9): a minute of SIGKILLs to workers, ham and its
guardian must end with a clean verdict. The 10-minute run is by hand (README)."""

import subprocess
import sys

from tests.conftest import ROOT


def test_a_minute_of_chaos_ends_clean(hamtools_zip):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "chaos"), "--duration", "60", "--seed", "2026"],
                          capture_output=True, text=True, timeout=300)
    print(done.stdout)
    assert done.returncode == 0 and "verdict: clean" in done.stdout, done.stdout + done.stderr
    assert "takeovers   clean: ham killed " in done.stdout  # ham was really killed, more than once
