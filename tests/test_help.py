"""--help texts name the QNX call or option each command and option maps to (or say there is
none), as rendered for a user."""

import re

import pytest
import typer.main

from hamtools.applets import ham, hamctl
from hamtools.core import cli

COMMANDS = list(typer.main.get_command(hamctl.app).commands)
QNX_HAM_OPTIONS = ("-v", "-V", "-d", "-f", "-t", "-h", "-?")  # QNX 6.5-8.0 ham's own


@pytest.mark.parametrize("command", COMMANDS)
def test_every_hamctl_command_names_its_qnx_call(command, capsys):
    assert cli.run(hamctl.app, "hamctl", [command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # click wraps lines
    mapping = re.search(r"QNX: (.+?)(\.|$)", text)
    assert mapping, f"hamctl {command} --help names no QNX call"
    calls = re.findall(r"\b(ham_\w+)\(\)", mapping[1])
    import hamtools.ham as libham

    assert all(hasattr(libham, call) for call in calls), calls  # only calls that exist
    assert calls or "none" in mapping[1] or "/proc/ham" in mapping[1], mapping[1]


def test_ham_help_marks_qnx_options_and_the_rest_as_its_own():
    qnx, own = ham.USAGE.split("QNX ham's options")[1].split("hamtools' own (QNX ham has none of these):")
    for option in QNX_HAM_OPTIONS:
        line = next(line for line in qnx.splitlines() if re.match(rf"\s+{re.escape(option)}\b", line)
                    or f", {option}," in line or f", {option} " in line)
        assert re.search(rf"QNX: ham (-\S+, )*{re.escape(option)}(?![\w-])", line), line
    assert set(re.findall(r"^\s+(--[a-z-]+)", own, re.MULTILINE)) == {o for o in ham.OPTIONS if o.startswith("--")} - {"--help"}
