"""The cgroup v2 tests of test_child.py, for real: this machine's cgroup v2 has no controllers
(its pids controller is bound to cgroup v1), so those tests run again inside the VM harness,
where the guest mounts a whole cgroup v2 hierarchy. Nothing in them may skip there."""

import subprocess
import sys

from tests.conftest import ROOT
from tests.test_wdt_vm import skip_or_fail, unavailable


def test_cgroup_limits_are_enforced_in_a_full_cgroup_v2(tmp_path):
    reason = unavailable()
    if reason:
        skip_or_fail(reason)
    script = (f"mount -t cgroup2 none /sys/fs/cgroup && cd {ROOT} && "
              f"{sys.executable} -m pytest -q -p no:cacheprovider -rs tests/test_child.py -k cgroup")
    done = subprocess.run([str(ROOT / "scripts" / "vm-test"), "--device", "none", "--timeout", "240",
                           "--", "/bin/sh", "-c", script], capture_output=True, text=True, timeout=300)
    if done.returncode == 126:
        skip_or_fail(f"scripts/vm-test could not set up the VM: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert "skipped" not in summary and " passed" in summary, done.stdout
    assert int(summary.split(" passed")[0].split()[-1]) >= 2  # the join and the pids limit
