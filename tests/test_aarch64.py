"""`scripts/build --arch aarch64`: bin/hamtools-aarch64 carries psutil's aarch64 wheel and no
x86 code, and runs on an aarch64 Python under QEMU's user-mode emulation (scripts/aarch64-python
fetches Debian's arm64 python3.11): --version, help, heartbeat and hamctl against a ham on this
host, and sockmon following a `name:` target through psutil's aarch64 extension, extracted
under emulation. (ham itself cannot run there: QEMU 7.2's user mode refuses
PR_SET_CHILD_SUBREAPER.)"""

import json
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT
from tests.hamfix import ham, wait_for  # noqa: F401
from tests.test_ham import send, start_client
from tests.test_sockmon import Sockmon, make_script, runs
from tests.test_wdt_vm import skip_or_fail

EM_X86_64, EM_AARCH64 = 62, 183
HOST_MACHINE = {"x86_64": EM_X86_64, "aarch64": EM_AARCH64}


def elf_machine(data: bytes) -> int:
    """e_machine of a 64-bit little-endian ELF file (the only kind either build holds)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LSB ELF"
    return struct.unpack_from("<H", data, 18)[0]


@pytest.fixture(scope="module")
def aarch64_zip():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build"), "--arch", "aarch64"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"build: {ROOT}/bin/hamtools-aarch64 (")
    return ROOT / "bin" / "hamtools-aarch64"


def native(zip_path) -> dict:
    with zipfile.ZipFile(zip_path) as archive:
        return {name: elf_machine(archive.read(name)) for name in archive.namelist() if name.endswith(".so")}


def test_the_native_code_is_aarch64_and_nothing_else_differs(aarch64_zip, hamtools_zip):
    assert native(aarch64_zip) == {"site-packages/psutil/_psutil_linux.abi3.so": EM_AARCH64}
    if platform.machine() in HOST_MACHINE:
        assert native(hamtools_zip) == {"site-packages/psutil/_psutil_linux.abi3.so": HOST_MACHINE[platform.machine()]}
    with zipfile.ZipFile(aarch64_zip) as cross, zipfile.ZipFile(hamtools_zip) as host:
        assert cross.namelist() == host.namelist()
        differ = [n for n in host.namelist() if cross.read(n) != host.read(n)]
    assert set(differ) <= {"site-packages/psutil/_psutil_linux.abi3.so", "site-packages/psutil-7.2.2.dist-info/WHEEL",
                           "environment.json"}  # the build id hashes the contents


@pytest.fixture(scope="module")
def emulate(aarch64_zip):
    """Run the aarch64 zipapp (or, with zip=False, the bare interpreter) under qemu-aarch64."""
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if qemu is None:
        skip_or_fail("needs qemu-aarch64 (apt-get install qemu-user)")
    prepared = subprocess.run([str(ROOT / "scripts" / "aarch64-python")], capture_output=True, text=True,
                              timeout=600, check=False)
    if prepared.returncode != 0:
        skip_or_fail(f"no aarch64 Python: {prepared.stderr.strip()}")
    root = prepared.stdout.strip()
    command = [qemu, "-L", root, f"{root}/usr/bin/python3.11", "-I"]

    def run(*args, zip=True, env=None, **kw):
        argv = [*command, *([str(aarch64_zip)] if zip else []), *map(str, args)]
        return subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **(env or {})}, capture_output=True, text=True,
                              timeout=120, check=False, **kw)

    run.command = [*command, str(aarch64_zip)]
    return run


def test_an_aarch64_interpreter_runs_version_and_help(emulate):
    assert emulate("-c", "import platform; print(platform.machine())", zip=False).stdout == "aarch64\n"
    assert emulate("--version").stdout == "hamtools 0.1.0\n"
    helped = emulate("heartbeat", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: heartbeat"), helped.stderr


def test_aarch64_heartbeat_and_hamctl_talk_to_a_ham_here(emulate, ham):
    client = start_client(ham, "worker", period=5, hpdl=1, hpdh=2)
    try:
        beat = emulate("heartbeat", "worker", env={"HAM_RUNTIME_DIR": ham.dir})
        assert beat.returncode == 0, beat.stderr
        status = emulate("hamctl", "status", "--json", env={"HAM_RUNTIME_DIR": ham.dir})
        assert status.returncode == 0, status.stderr
        worker = next(e for e in json.loads(status.stdout)["entities"] if e["name"] == "worker")
        assert worker["beats"] == 1 and worker["type"] == "self"
    finally:
        send(client, "exit")
        client.wait(5)


def test_sockmon_follows_a_name_through_the_aarch64_psutil(emulate, tmp_path):
    prog = tmp_path / f"smq{os.getpid()}"
    shutil.copy("/bin/sleep", prog)
    server = subprocess.Popen([str(prog), "300"])
    script, record = make_script(tmp_path)
    shiv_root = tmp_path / "shiv"
    mon = Sockmon(["--watch", f"name:{prog.name}", "--restart", script, "--retries", "1",
                   "--retry-interval", "0.05"], tmp_path, command=[*emulate.command, "sockmon", "--log", "stderr"],
                  env={"SHIV_ROOT": str(shiv_root), "PYTHONPATH": ""})
    try:
        mon.wait_for(f"watching (pid {server.pid})", timeout=90)  # psutil found it
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert mon.wait(60) == 1  # it does not come back: sockmon gives up
    finally:
        if mon.proc.poll() is None:
            mon.proc.kill()
        if server.poll() is None:
            server.kill()
    assert runs(record) == [[f"name:{prog.name}", "exited", str(server.pid), ""]]
    extracted = list(shiv_root.glob("hamtools_*/site-packages/psutil/_psutil_linux.abi3.so"))
    assert [elf_machine(path.read_bytes()) for path in extracted] == [EM_AARCH64]
