"""What the scripts/bench* scripts share: the zipapp, a ham to measure, the header line that
says when, where and how a figure was made, interleaved timing and /proc readings.

The scripts put scripts/ on sys.path and `import benchlib`; scripts/bench runs them all.
"""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HERE = Path(__file__).resolve().parent
BUILT = "HAMTOOLS_BENCH_BUILT"  # set by scripts/bench once it has built bin/hamtools
DEBIAN_PYTHON = "/usr/bin/python3"


def build() -> Path:
    """bin/hamtools from the tree (once per scripts/bench run)."""
    if not os.environ.get(BUILT):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build")], check=True, stdout=subprocess.DEVNULL)
    return ROOT / "bin" / "hamtools"


def python() -> str:
    """The interpreter the daemons run on: Debian's, else this one."""
    return DEBIAN_PYTHON if os.path.exists(DEBIAN_PYTHON) else sys.executable


def header(command: str, note: str = "") -> str:
    return (f"# {command}  ({time.strftime('%Y-%m-%d')}, {os.uname().machine}, {os.cpu_count()} cpus"
            f"{', ' + note if note else ''})\n")


def start_ham(run: Path, *extra: str) -> subprocess.Popen:
    """ham from bin/hamtools in the foreground on runtime dir run, once it has its sockets."""
    ham = subprocess.Popen([python(), "-I", str(ROOT / "bin" / "hamtools"), "ham", "--foreground",
                            "-f", str(run / "ham.log"), "--runtime-dir", str(run), *extra])
    deadline = time.monotonic() + 20
    while not (run / "client").exists():
        if ham.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("bench: ham did not start")
        time.sleep(0.02)
    return ham


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def interleaved_medians(cases: dict, env: dict, runs: int) -> dict:
    """Median wall time per command, run interleaved so drift hits all alike."""
    times = {name: [] for name in cases}
    for _ in range(runs):
        for name, argv in cases.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def real_python(python: str | None) -> str:
    """The interpreter behind a name (pyenv's shim is a shell script: time what it runs)."""
    found = subprocess.run([python or "python3", "-c", "import sys; print(sys.executable)"],
                           capture_output=True, text=True)
    return found.stdout.strip()


def default_pythons() -> list[str]:
    return list(dict.fromkeys([DEBIAN_PYTHON, real_python(shutil.which("python3"))]))


def memory(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB, summed over pids."""
    rss = pss = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        rss += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        pss += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
    return rss, pss


def switches(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        total += sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)
    return total


def idle_wakeups(pids: list[int], seconds: float) -> float:
    """Context switches per second of pids while nobody asks anything of them."""
    before = switches(pids)
    time.sleep(seconds)
    return (switches(pids) - before) / seconds


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
