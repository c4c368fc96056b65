"""The zipapp on a read-only root, for real: a private mount namespace whose every mount is
read-only but two tmpfs (the runtime directory and a scratch SHIV_ROOT), as on a board with a
read-only image. ham, hamctl and heartbeat write nothing but ham's runtime directory and never
extract; sockmon takes psutil from a directory `hamtools --extract` prepared before the root
went read-only, or extracts it once to a tmpfs SHIV_ROOT; with an unprepared read-only
SHIV_ROOT only its name: targets fail, in one line. The guest half is tests/readonly_guest.py."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def facts(hamtools_zip, clean_python, tmp_path_factory):
    if not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("needs unshare and mount (util-linux, mount)")
    work = tmp_path_factory.mktemp("readonly")
    for directory in ("run", "tmpfs-shiv", "empty-shiv"):
        (work / directory).mkdir()
    (work / "board.toml").write_text('[service.svc]\ncommand = "/bin/sleep 600"\nheartbeat = "1s"\n'
                                     "missed_low = 3\nmissed_high = 5\n")
    (work / "restart.sh").write_text(f'#!/bin/sh\necho "$SOCKMON_TARGET $SOCKMON_REASON" >> {work}/run/runs\n')
    (work / "restart.sh").chmod(0o755)
    prepared = subprocess.run([clean_python, "-I", str(hamtools_zip), "--extract", str(work / "image-shiv")],
                              capture_output=True, text=True, check=False)
    assert prepared.returncode == 0, prepared.stderr
    # Root may make a namespace of its own; anyone else needs a user namespace for it.
    unshare = ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else \
        ["unshare", "-r", "-m", "--propagation", "private"]
    done = subprocess.run([*unshare, sys.executable, "-B", str(ROOT / "tests" / "readonly_guest.py"),
                           clean_python, str(hamtools_zip), str(work)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and not done.stdout.strip():
        pytest.skip(f"no private mount namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return {"work": str(work), "prepared": prepared.stdout, **json.loads(done.stdout)}


def test_everything_but_the_tmpfs_is_read_only(facts):
    assert facts["remount refused"] == []
    assert facts["writable"] == {facts["work"]: "EROFS", str(ROOT / "bin"): "EROFS",
                                 os.path.expanduser("~"): "EROFS", "/": "EROFS", "/tmp": "EROFS",
                                 f"{facts['work']}/run": "writable"}


def test_ham_hamctl_and_heartbeat_write_nothing_and_extract_nothing(facts):
    assert facts["ham"]["rc"] == 0, facts["ham"]["err"]
    assert facts["heartbeat"]["rc"] == 0, facts["heartbeat"]["err"]
    svc = next(e for e in json.loads(facts["status"]["out"])["entities"] if e["name"] == "svc")
    assert svc["run"] == "running" and svc["beats"] == 1
    assert facts["scratch after the core applets"] == []
    assert facts["stop"]["rc"] == 0, facts["stop"]["err"]


def test_sockmon_imports_psutil_from_the_prepared_read_only_copy(facts):
    assert facts["prepared"].startswith(f"hamtools: psutil in {facts['work']}/image-shiv/hamtools_")
    ran = facts["sockmon prepared"]
    assert ran["rc"] == 1 and "giving up" in ran["err"], ran["err"]  # the server never came back
    assert facts["restart script runs"].startswith("name:smro") and facts["restart script runs"].endswith(" exited\n")


def test_an_unprepared_read_only_shiv_root_fails_only_what_needs_psutil_in_one_line(facts):
    expected = (f"sockmon: name: targets need psutil (cannot extract psutil to {facts['work']}/empty-shiv: "
                "Read-only file system (set SHIV_ROOT to a writable directory, or prepare one with "
                "hamtools --extract DIR))\n")
    assert (facts["sockmon unprepared"]["rc"], facts["sockmon unprepared"]["err"]) == (1, expected)
    helped = facts["sockmon --help unprepared"]
    assert helped["rc"] == 0 and helped["out"].startswith("Usage: sockmon"), helped["err"]
    watched = facts["sockmon pid: unprepared"]
    assert watched["rc"] == 0 and "restart script /bin/true exited 0" in watched["err"], watched["err"]
    assert (facts["extract on read-only"]["rc"], facts["extract on read-only"]["err"]) == (
        1, f"hamtools: --extract: {facts['work']}/elsewhere: Read-only file system\n")


def test_a_tmpfs_shiv_root_is_extracted_to_once_psutil_is_needed(facts):
    looked = facts["sockmon tmpfs"]
    assert looked["rc"] == 1 and "no process named smro" in looked["err"], looked["err"]  # psutil searched
    assert [name.split("_")[0] for name in facts["scratch after sockmon"]] == ["hamtools"]
