"""docs/ stays true: every TOML example loads with ham's own configuration loader, and every
service key, hamctl command and libham call the mapping tables name exists."""

import re

import pytest
import typer.main

import hamtools.ham as libham
from hamtools.applets import hamctl
from hamtools.hamd import config
from hamtools.hamd.service import GROUP_KEYS, SERVICE_KEYS
from tests.conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md"))
COMMANDS = set(typer.main.get_command(hamctl.app).commands)


def rows(text: str, header: str) -> list[list[str]]:
    """The cells of each table whose header row starts with `header`."""
    found, inside = [], False
    for line in text.splitlines():
        if line.startswith(f"| {header}"):
            inside = True
        elif inside and line.startswith("|"):
            if not line.startswith("|---"):
                found.append([cell.strip() for cell in line.strip("|").split(" | ")])
        else:
            inside = False
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_toml_examples_load(doc, tmp_path):
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(), re.DOTALL)
    for n, block in enumerate(blocks):
        path = tmp_path / f"example{n}.toml"
        path.write_text(block)
        specs, _, _ = config.load([str(path)])
        assert specs


def test_the_service_keys_in_the_mappings_exist():
    text = (ROOT / "docs" / "from-supervisord-systemd.md").read_text()
    tables = rows(text, "supervisord (") + rows(text, "systemd (")
    named = {key for _, ham_cell, *_ in tables for key in re.findall(r"`(\w+)(?: = [^`]*)?`", ham_cell)}
    assert len(tables) > 30 and named
    values = {"always", "on-failure", "never", "none", "notify", "stdout", "syslog", "null", "inherit", "reboot",
              "exec", "one_for_all", "rest_for_one", "x",  # values, and the words that are no keys:
              "control", "client", "execute", "notify_pulse"}
    assert named - values <= set(SERVICE_KEYS) | set(GROUP_KEYS), named - values - set(SERVICE_KEYS) - set(GROUP_KEYS)


def test_the_hamctl_commands_named_exist():
    text = (ROOT / "docs" / "from-supervisord-systemd.md").read_text()
    for _, cell in rows(text, "supervisorctl") + rows(text, "systemctl"):
        for quoted in re.findall(r"`([^`]+)`", cell):
            words = quoted.split()[1:] if quoted.startswith("hamctl ") else quoted.split()
            if words[0] not in (*SERVICE_KEYS, "ham") and not words[0].startswith("-"):  # `stdout`, `--json`
                assert words[0] in COMMANDS, quoted
    qnx = (ROOT / "docs" / "from-qnx.md").read_text()
    for command in re.findall(r"`hamctl ([a-z][\w-]*)", qnx):
        assert command in COMMANDS, command


def test_the_libham_calls_named_exist():
    text = (ROOT / "docs" / "from-qnx.md").read_text()
    names = set(re.findall(r"\b(ham_\w+)\(", text))
    assert len(names) > 20
    assert {name for name in names if not hasattr(libham, name)} == set()
