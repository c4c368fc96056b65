"""The guest half of test_readonly_root.py, run in a private mount namespace (unshare -m):
mounts tmpfs where an embedded board has it (/run, a scratch SHIV_ROOT), makes every other
mount read-only, then runs the zipapp's applets the way such a board does. It prints what it
saw as one JSON object; the test asserts.

    python3 readonly_guest.py PYTHON ZIPAPP WORK

WORK holds: board.toml, restart.sh, image-shiv/ (prepared by `hamtools --extract`),
empty-shiv/ (not prepared), and the empty mount points run/ and tmpfs-shiv/.
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import time

PYTHON, ZIPAPP, WORK = sys.argv[1:4]
RUN, SCRATCH = os.path.join(WORK, "run"), os.path.join(WORK, "tmpfs-shiv")
FACTS: dict = {}


def sh(*command: str) -> None:
    subprocess.run(command, check=True)


def read_only_root() -> None:
    for point in (RUN, SCRATCH):
        sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", point)
    refused = []
    with open("/proc/self/mountinfo") as table:
        points = [line.split()[4].encode().decode("unicode_escape") for line in table]
    for point in points:
        if point in (RUN, SCRATCH) or point.split("/")[1] in ("proc", "sys", "dev"):
            continue
        if subprocess.run(["mount", "-o", "remount,bind,ro", point], capture_output=True, check=False).returncode:
            refused.append(point)
    FACTS["remount refused"] = refused


def writable(path: str) -> str:
    probe = os.path.join(path, f".probe-{os.getpid()}")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as err:
        return errno.errorcode[err.errno]
    os.unlink(probe)
    return "writable"


def hamtools(*args: str, shiv: str = SCRATCH) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.path.expanduser("~"), "SHIV_ROOT": shiv,
           "HAM_RUNTIME_DIR": os.path.join(RUN, "ham")}
    done = subprocess.run([PYTHON, "-I", ZIPAPP, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    return {"rc": done.returncode, "out": done.stdout, "err": done.stderr}


def main() -> None:
    read_only_root()
    FACTS["writable"] = {where: writable(where) for where in
                         (WORK, os.path.dirname(ZIPAPP), os.path.expanduser("~"), "/", "/tmp", RUN)}
    FACTS["ham"] = hamtools("ham", "-f", os.path.join(RUN, "ham.log"), "--config", os.path.join(WORK, "board.toml"))
    FACTS["heartbeat"] = hamtools("heartbeat", "svc")
    FACTS["status"] = hamtools("hamctl", "status", "--json")
    FACTS["scratch after the core applets"] = os.listdir(SCRATCH)

    # sockmon's name: target imports psutil's C extension: from the prepared, read-only copy.
    prog = os.path.join(RUN, f"smro{os.getpid()}")
    shutil.copy("/bin/sleep", prog)
    server = subprocess.Popen([prog, "3"])
    FACTS["sockmon prepared"] = hamtools("sockmon", "--watch", f"name:{os.path.basename(prog)}", "--restart",
                                         os.path.join(WORK, "restart.sh"), "--retries", "1",
                                         "--retry-interval", "0.05", "--log", "stderr",
                                         shiv=os.path.join(WORK, "image-shiv"))
    server.wait()
    with open(os.path.join(RUN, "runs")) as runs:
        FACTS["restart script runs"] = runs.read()
    empty = os.path.join(WORK, "empty-shiv")
    FACTS["sockmon unprepared"] = hamtools("sockmon", "--watch", f"name:{os.path.basename(prog)}", "--restart",
                                           "/bin/true", shiv=empty)
    FACTS["sockmon --help unprepared"] = hamtools("sockmon", "--help", shiv=empty)
    brief = subprocess.Popen(["sleep", "1.5"])  # a pid: target needs no psutil, so no extraction
    FACTS["sockmon pid: unprepared"] = hamtools("sockmon", "--watch", f"pid:{brief.pid}", "--restart", "/bin/true",
                                                "--retries", "1", shiv=empty)
    brief.wait()
    # name: on the tmpfs SHIV_ROOT: psutil is extracted there to look for it (it is gone by now)
    FACTS["sockmon tmpfs"] = hamtools("sockmon", "--watch", f"name:{os.path.basename(prog)}", "--restart",
                                      "/bin/true", "--retries", "1", "--retry-interval", "0.05")
    FACTS["scratch after sockmon"] = os.listdir(SCRATCH)
    FACTS["extract on read-only"] = hamtools("--extract", os.path.join(WORK, "elsewhere"))


if __name__ == "__main__":
    try:
        main()
    finally:
        FACTS["stop"] = hamtools("hamctl", "stop", "--stop-entities")
        time.sleep(0.2)
        print(json.dumps(FACTS))
