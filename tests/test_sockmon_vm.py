"""`sockmon --on-give-up reboot` for real: inside a VM (scripts/vm-test), the machine reboots.

Boot 1 leaves a marker in the share (a host directory that survives the reset), then runs the
built zipapp's sockmon on a socket nobody serves, with --on-give-up reboot. sockmon gives up,
syncs and calls reboot(2); the VM resets; boot 2 sees the marker and ends the run.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VM_TEST = ROOT / "scripts" / "vm-test"

pytestmark = pytest.mark.skipif(
    not VM_TEST.exists() or shutil.which("qemu-system-x86_64") is None,
    reason="needs scripts/vm-test and qemu-system-x86_64")

GUEST = """\
#!/bin/sh
echo "boot $VM_BOOT" >> "$VM_SHARE/boots.log"
if [ "$VM_BOOT" = 1 ]; then
    echo "marker from boot 1" > "$VM_SHARE/marker"
    SHIV_ROOT=/tmp/shiv python3 -I {zipapp} sockmon --watch unix:/run/nobody.sock \\
        --restart /bin/true --retries 2 --retry-interval 0.05 --on-give-up reboot --log stderr
    echo "sockmon returned $? instead of rebooting" >> "$VM_SHARE/boots.log"
else
    cat "$VM_SHARE/marker" >> "$VM_SHARE/boots.log"
fi
"""


def test_give_up_reboot_really_reboots_the_vm(tmp_path, hamtools_zip):
    share = tmp_path / "share"
    share.mkdir()
    (share / "guest.sh").write_text(GUEST.format(zipapp=hamtools_zip))
    report = tmp_path / "report.json"
    done = subprocess.run([str(VM_TEST), "--device", "none", "--boots", "2", "--share", str(share),
                           "--timeout", "240", "--report", str(report), "--",
                           "/bin/sh", "/run/vm-share/guest.sh"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (share / "boots.log").read_text().splitlines() == [
        "boot 1", "boot 2", "marker from boot 1"]
    boots = json.loads(report.read_text())["boots"]
    assert [b["boot"] for b in boots] == [1, 2]
    assert boots[0]["rc"] is None  # boot 1's command never finished: the machine rebooted
    first = (share / "boot-1.err").read_text()
    assert "giving up after 2 tries" in first and "gave up; rebooting" in first
