"""Shared fixtures: the built zipapp, and running it the way a user does."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ZIPAPP = ROOT / "bin" / "hamtools"


@pytest.fixture(scope="session")
def hamtools_zip() -> Path:
    """bin/hamtools, built once per test session from the current tree."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "build")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return ZIPAPP


@pytest.fixture(scope="session")
def clean_python(tmp_path_factory) -> str:
    """An interpreter with nothing installed: a fresh venv (no pip) of the base Python.

    The dev venv will not do: its editable install of hamtools would shadow the zip's copy.
    """
    where = tmp_path_factory.mktemp("clean-venv")
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv",
                    "--without-pip", str(where)], check=True)
    return str(where / "bin" / "python")


@pytest.fixture
def run_zip(hamtools_zip, clean_python, tmp_path):
    """Run the zipapp in isolated mode with a clean interpreter from an empty directory."""

    def run(*args, argv0=None, env=None, timeout=30, **kw):
        exe = str(argv0 or hamtools_zip)
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "SHIV_ROOT": str(tmp_path / "shiv")}
        base.update(env or {})
        return subprocess.run([clean_python, "-I", exe, *map(str, args)], cwd=tmp_path,
                              env=base, capture_output=True, text=True, timeout=timeout, **kw)

    run.python = clean_python
    return run
