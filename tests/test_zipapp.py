"""The built zipapp, run the way a target runs it: `python3 -I`, an empty working directory,
a fresh SHIV_ROOT, nothing installed but the interpreter."""

import os
import subprocess
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from hamtools import __version__, registry
from tests.conftest import ROOT

CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hamtools"]["zipapp"]


def test_size_within_budget(hamtools_zip):
    assert hamtools_zip.stat().st_size <= CONFIG["max_bytes"]


def test_contents_leave_out_rich_and_carry_pycs(hamtools_zip):
    names = zipfile.ZipFile(hamtools_zip).namelist()
    tops = {n.split("/")[1] for n in names if n.startswith("site-packages/") and n.count("/") > 1}
    assert {"hamtools", "typer", "psutil", "shellingham", "annotated_doc"} <= tops
    assert not tops & {"rich", "pygments", "markdown_it", "mdurl", "pydantic", "click"}
    assert "site-packages/hamtools/multicall.pyc" in names
    assert "__main__.py" in names and "environment.json" in names  # shiv's build id: zipextract
    assert not [n for n in names if n.startswith("_bootstrap/")]  # shiv's bootstrap: never used


def test_shebang_and_shiv_entry_point(hamtools_zip):
    assert hamtools_zip.read_bytes().startswith(f"#!{CONFIG['shebang']}\n".encode())
    env = zipfile.ZipFile(hamtools_zip).read("environment.json").decode()
    assert '"entry_point": "hamtools.multicall:main"' in env


def test_version_list_help(run_zip):
    assert run_zip("--version").stdout == f"hamtools {__version__}\n"
    assert run_zip("--list").stdout.split() == [a.name for a in registry.APPLETS]
    assert "Applets:" in run_zip("--help").stdout


@pytest.mark.parametrize("applet", [a.name for a in registry.APPLETS])
def test_every_applet_help_from_the_zip(run_zip, applet):
    done = run_zip(applet, "--help")
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and "Traceback" not in done.stderr


def test_unknown_applet(run_zip):
    done = run_zip("nope")
    assert (done.returncode, done.stderr) == (127, "nope: applet not found\n")


def test_symlink_dispatch_both_ways(run_zip, hamtools_zip, tmp_path):
    link = tmp_path / "heartbeat"
    link.symlink_to(hamtools_zip)
    assert run_zip("--help", argv0=link).stdout.startswith("Usage: heartbeat")
    stranger = tmp_path / "frob"
    stranger.symlink_to(hamtools_zip)
    assert run_zip(argv0=stranger).returncode == 127
    # executed directly through the shebang, with the clean interpreter first on PATH
    path = f"{os.path.dirname(run_zip.python)}:/usr/bin:/bin"
    done = subprocess.run([str(link), "--help"], env={"PATH": path}, capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("Usage: heartbeat")


@pytest.mark.parametrize("symbolic", [False, True])
def test_install_links_every_applet(run_zip, hamtools_zip, tmp_path, symbolic):
    target = tmp_path / "sbin"
    target.mkdir()
    (target / "wdt").write_text("someone else's wdt\n")
    done = run_zip("--install", *(["-s"] if symbolic else []), target)
    assert done.returncode == 0, done.stderr
    assert "1 existing left alone" in done.stdout
    assert (target / "wdt").read_text() == "someone else's wdt\n"
    for applet in registry.APPLETS:
        if applet.name == "wdt":
            continue
        link = target / applet.name
        if symbolic:
            assert os.readlink(link) == str(hamtools_zip.resolve())
        else:
            assert link.stat().st_ino == hamtools_zip.stat().st_ino
    assert run_zip("--help", argv0=target / "pulsedemo").stdout.startswith("Usage: pulsedemo")
    again = run_zip("--install", target)
    assert again.returncode == 0 and f"{len(registry.APPLETS)} existing left alone" in again.stdout


def importtime(python, hamtools_zip, tmp_path, *args, env=None):
    """Every module the interpreter imported while running the zipapp (-X importtime)."""
    base = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv"),
            "HAM_RUNTIME_DIR": str(tmp_path / "no-ham"), **(env or {})}
    done = subprocess.run([python, "-I", "-X", "importtime", str(hamtools_zip), *args],
                          cwd=tmp_path, env=base, capture_output=True, text=True)
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines()
               if line.startswith("import time:")}
    return done, modules


def test_heartbeat_one_shot_imports_neither_typer_nor_psutil(clean_python, hamtools_zip, tmp_path):
    done, modules = importtime(clean_python, hamtools_zip, tmp_path, "heartbeat", "worker")
    assert done.returncode == 3  # no ham: the whole path ran up to connect()
    assert "hamtools.applets.heartbeat" in modules and "_socket" in modules
    assert heavy_modules(modules, "typer", "psutil", "rich", "shellingham", "dataclasses", "socket",
                         "json", "hamtools.neutrino", "_bootstrap") == set()


def heavy_modules(modules, *heavy):
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy)}


def test_the_daemon_runs_lean_under_its_own_name(clean_python, hamtools_zip, tmp_path):
    """ham from the zip execs itself without the launcher's modules (core.relaunch), and its
    steady state imports none of the packages that cost resident size."""
    run = tmp_path / "run"
    ham = subprocess.Popen([clean_python, "-I", "-X", "importtime", str(hamtools_zip), "ham",
                            "--foreground", "--runtime-dir", str(run), "-f", str(tmp_path / "log")],
                           cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                           env={"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv")})
    try:
        deadline = time.monotonic() + 10
        while not (run / "client").exists():
            assert ham.poll() is None and time.monotonic() < deadline, "ham did not come up"
            time.sleep(0.02)
        comm = Path(f"/proc/{ham.pid}/comm").read_text().strip()
        argv = Path(f"/proc/{ham.pid}/cmdline").read_bytes().split(b"\0")
    finally:
        ham.terminate()
        _, stderr = ham.communicate(timeout=10)
    assert ham.returncode == 0
    assert comm == "ham" and b"-c" in argv and argv[-7:-5] == [b"ham", b"--foreground"]
    launcher, daemon = ({line.split("|")[-1].strip() for line in part.splitlines() if "|" in line}
                        for part in stderr.split("import time: self [us]")[1:3])  # a header each
    assert "runpy" in launcher and "hamtools.hamd.daemon" not in launcher
    loaded = daemon
    assert "hamtools.hamd.daemon" in loaded and "_json" in loaded
    assert heavy_modules(loaded, "runpy", "json", "re", "enum", "socket", "signal", "selectors",
                         "collections", "functools", "ctypes", "array", "typer", "psutil",
                         "hamtools.hamd.services", "hamtools.hamd.managed", "hamtools.core.pathwatch",
                         "hamtools.hamd.hwdog") == set()


def test_typer_applets_import_typer_without_rich(clean_python, hamtools_zip, tmp_path):
    done, modules = importtime(clean_python, hamtools_zip, tmp_path, "pulsedemo", "--help")
    assert done.returncode == 0
    assert "typer" in modules and not {m for m in modules if m.startswith("rich")}


def test_nothing_is_extracted_for_pure_python_applets(run_zip, tmp_path):
    assert run_zip("pulsedemo", "--help").returncode == 0
    assert not (tmp_path / "shiv").exists()


def test_every_package_is_a_regular_package():
    # zipimport cannot import namespace packages: a directory without __init__.py works from
    # the source tree and fails in the zipapp.
    missing = [str(d.relative_to(ROOT)) for d in (ROOT / "hamtools").rglob("*")
               if d.is_dir() and d.name != "__pycache__" and not (d / "__init__.py").exists()]
    assert missing == []


def test_ham_runs_from_the_zip(run_zip, tmp_path):
    done = run_zip("ham", "--foreground", "--runtime-dir", tmp_path / "run", "-t", "bogus")
    assert done.returncode == 2  # parsed by the zip's own ham, nothing started
    assert "Traceback" not in done.stderr
