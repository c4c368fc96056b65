"""The applet registry and multi-call dispatch, in process (fast) and through python -m."""

import importlib
import subprocess
import sys
import tomllib

import pytest

from hamtools import __version__, multicall, registry
from hamtools.core.errors import AppletError
from tests.conftest import ROOT

EXPECTED = ["ham", "hamctl", "heartbeat", "sockmon", "wdt", "pulsedemo"]


def test_registry_lists_the_six_applets_in_order():
    assert [a.name for a in registry.APPLETS] == EXPECTED


@pytest.mark.parametrize("applet", registry.APPLETS, ids=lambda a: a.name)
def test_every_registry_entry_names_a_module_with_main(applet):
    module = importlib.import_module(applet.module)
    assert callable(module.main)
    assert applet.summary and "\n" not in applet.summary
    assert registry.find(applet.name) is applet


def test_find_unknown_is_none():
    assert registry.find("nope") is None


def test_version_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__


def test_importing_multicall_imports_no_applet_and_no_typer():
    code = ("import sys, hamtools.multicall; "
            "bad = [m for m in sys.modules if m.startswith('hamtools.applets.') or "
            "m.split('.')[0] in ('typer', 'psutil', 'dataclasses')]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def run(argv, capsys):
    code = multicall.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list(capsys):
    code, out, _ = run(["hamtools", "--list"], capsys)
    assert code == 0 and out.split() == EXPECTED


def test_version(capsys):
    code, out, _ = run(["/usr/bin/hamtools", "--version"], capsys)
    assert (code, out) == (0, f"hamtools {__version__}\n")


@pytest.mark.parametrize("args", [[], ["--help"], ["-h"]])
def test_top_level_help_lists_every_applet(capsys, args):
    code, out, _ = run(["hamtools", *args], capsys)
    assert code == 0
    assert "--install [-s] DIR" in out
    for applet in registry.APPLETS:
        assert f"  {applet.name}" in out and applet.summary in out


def test_help_applet_is_the_applets_help(capsys):
    code, out, _ = run(["hamtools", "--help", "heartbeat"], capsys)
    assert code == 0 and out.startswith("Usage: heartbeat NAME")


@pytest.mark.parametrize("argv", [["hamtools", "frobnicate"], ["frobnicate", "x"],
                                  ["hamtools", "--help", "frobnicate"]])
def test_unknown_applet_is_127(capsys, argv):
    code, out, err = run(argv, capsys)
    assert (code, out, err) == (127, "", "frobnicate: applet not found\n")


def test_unknown_option_is_usage_error(capsys):
    code, _, err = run(["hamtools", "--frob"], capsys)
    assert code == 2 and err.startswith("hamtools: unknown option: --frob\n")


def test_dispatch_by_link_name_strips_dash_and_path(capsys):
    # a login shell's "-heartbeat", run through a path
    code, out, _ = run(["/usr/sbin/-heartbeat", "--help"], capsys)
    assert code == 0 and out.startswith("Usage: heartbeat")


def test_hamtools_applet_form(capsys):
    code, out, _ = run(["hamtools", "heartbeat", "-h"], capsys)
    assert code == 0 and "Usage: heartbeat" in out


@pytest.mark.parametrize("argv,expected", [
    (["hamtools"], None), (["hamtools", "--list"], None), (["hamtools", "wdt", "info"], "wdt"),
    (["hamtools", "--help", "sockmon"], "sockmon"), (["/x/heartbeat", "n"], "heartbeat"),
    (["/x/nope"], None),
])
def test_target_applet(argv, expected):
    applet = multicall.target_applet(argv)
    assert (applet.name if applet else None) == expected


def test_guard_turns_applet_error_into_one_line(capsys):
    def body():
        raise AppletError("open /dev/x: busy", 3)

    assert multicall._guard("wdt", body) == 3
    assert capsys.readouterr().err == "wdt: open /dev/x: busy\n"


def test_guard_hides_tracebacks_of_bugs(capsys, monkeypatch):
    monkeypatch.delenv("HAMTOOLS_DEBUG", raising=False)

    def body():
        return {}["missing"]

    assert multicall._guard("ham", body) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ham: internal error: KeyError")
    monkeypatch.setenv("HAMTOOLS_DEBUG", "1")
    with pytest.raises(KeyError):
        multicall._guard("ham", body)


def test_guard_maps_none_to_zero_and_keeps_codes():
    assert multicall._guard("x", lambda: None) == 0
    assert multicall._guard("x", lambda: 4) == 4


def test_install_refuses_without_the_zipapp(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(ROOT / "hamtools" / "__main__.py")])
    code, _, err = run(["hamtools", "--install", str(tmp_path)], capsys)
    assert code == 1 and "is not the hamtools zipapp" in err
    assert list(tmp_path.iterdir()) == []


def test_install_usage(capsys):
    code, _, err = run(["hamtools", "--install"], capsys)
    assert code == 2 and "usage: hamtools --install [-s] DIR" in err


def test_ham_options_are_checked_before_anything_starts(capsys):
    code, _, err = run(["ham", "-t", "sideways"], capsys)
    assert code == 2 and err.startswith("ham: -t sideways: use one of none, relative")
    code, _, err = run(["ham", "--bogus"], capsys)
    assert code == 2 and "option --bogus not recognized" in err


def test_python_dash_m(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hamtools", "--version"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.stdout == f"hamtools {__version__}\n"


@pytest.mark.parametrize("argv,expected", [
    (["-vvv"], [("-v", ""), ("-v", ""), ("-v", "")]),
    (["-V3", "-f", "log", "-tnone"], [("-V", "3"), ("-f", "log"), ("-t", "none")]),
    (["-vV", "2"], [("-v", ""), ("-V", "2")]),
    (["--group=wheel", "--runtime-dir", "/r", "--foreground"],
     [("--group", "wheel"), ("--runtime-dir", "/r"), ("--foreground", "")]),
])
def test_ham_option_parser(argv, expected):
    from hamtools.applets.ham import parse_options

    assert parse_options(argv) == expected


@pytest.mark.parametrize("argv,message", [
    (["-x"], "option -x not recognized"), (["-V"], "option -V requires an argument"),
    (["--group"], "option --group requires an argument"), (["--foreground=1"], "option --foreground not recognized"),
    (["extra"], "unexpected argument 'extra'"),
])
def test_ham_option_parser_errors(argv, message):
    from hamtools.applets.ham import parse_options

    with pytest.raises(AppletError) as bad:
        parse_options(argv)
    assert bad.value.code == 2 and str(bad.value).startswith(message)
