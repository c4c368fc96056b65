"""Shell completion (hamtools/completion.py) in real shells: bash with the script loaded and
COMP_WORDS set, then bash and zsh in a pseudo-terminal pressing TAB, against links made by
`hamtools --install -s` and a real ham whose entities it offers. What it offers comes from the
registry and the command trees, which the last tests hold it to."""

import os
import pty
import re
import select
import shutil
import subprocess
import time

import pytest

from hamtools import completion, multicall, registry
from hamtools.applets import ham as ham_applet
from hamtools.ham import HREARMAFTERRESTART, ND_LOCAL_NODE, ham_attach, ham_condition
from tests.hamfix import ham  # noqa: F401


@pytest.fixture
def links(tmp_path, hamtools_zip):
    """A directory with the zipapp's links, first on PATH, as on a target."""
    where = tmp_path / "bin"
    subprocess.run([str(hamtools_zip), "--install", "-s", str(where)], check=True, capture_output=True)
    os.symlink(hamtools_zip, where / "hamtools")
    return where


@pytest.fixture
def board(ham):
    ehdl = ham_attach("web", ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    ham_condition(ehdl, 1, "death", HREARMAFTERRESTART)
    ham_attach("worker", ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    return ham


def env_for(links, ham=None) -> dict:
    env = {"PATH": f"{links}:{os.environ['PATH']}", "HOME": str(links.parent), "TERM": "dumb"}
    if ham is not None:
        env["HAM_RUNTIME_DIR"] = ham.dir
    return env


def bash_complete(links, line: str, ham=None, script: str = "") -> list[str]:
    """COMPREPLY for the cursor at the end of line, as bash's completion would set it."""
    words = line.split(" ")
    setup = subprocess.run([str(links / "hamtools"), "--completion", "bash"], capture_output=True,
                           text=True, check=True).stdout
    code = (f"{setup}\n{script}\nCOMP_WORDS=({' '.join(_quote(w) for w in _bash_split(words))})\n"
            "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n_hamtools\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], env=env_for(links, ham),
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.split("\n") if w]


def _bash_split(words: list[str]) -> list[str]:
    """COMP_WORDS as bash makes them: runs of '=' and ':' are words of their own
    (COMP_WORDBREAKS), and an empty last word is the one being completed."""
    return [part for word in words for part in ([p for p in re.split(r"([=:]+)", word) if p] if word else [""])]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def test_bash_applets_options_and_commands(links):
    assert set(bash_complete(links, "hamtools ")) >= {a.name for a in registry.APPLETS} | {"--install", "--completion"}
    assert bash_complete(links, "hamtools hamctl chec") == ["check"]
    assert bash_complete(links, "hamctl st") == ["status", "stop", "start", "state"]  # a link
    assert bash_complete(links, "hamtools --completion ") == ["bash", "zsh"]
    assert bash_complete(links, "hamctl condition web d ") == [
        "any", "death", "detach", "restart", "hbeatmissedlow", "hbeatmissedhigh", "abnormaldeath", "attach",
        "state", "raise"]
    assert bash_complete(links, "ham -t ") == ["none", "relative", "absolute", "shortabs"]
    assert bash_complete(links, "hamctl action web death x log m --flag HACTIONK") == ["HACTIONKEEPONFAIL"]


def test_bash_values_after_an_equals_sign(links):
    # bash splits restart=on into three words; what it replaces is only the last one
    assert bash_complete(links, "hamctl set web restart=on") == ["on-failure"]
    assert bash_complete(links, "hamctl set web restart=") == ["always", "on-failure", "never"]
    assert "max_restarts=" in bash_complete(links, "hamctl set web max")


def test_bash_files_directories_and_groups(links, tmp_path):
    (tmp_path / "board.toml").write_text("")
    (tmp_path / "boards").mkdir()
    prefix = str(tmp_path / "boa")
    assert set(bash_complete(links, f"ham --config {prefix}")) == {f"{prefix}rd.toml", f"{prefix}rds"}
    assert bash_complete(links, f"hamtools --install {prefix}") == [f"{prefix}rds"]
    assert "root" in bash_complete(links, "ham --group ro")
    assert bash_complete(links, f"sockmon --config {prefix}rd.") == [f"{prefix}rd.toml"]  # a FILE metavar


def test_bash_entities_of_the_running_ham(links, board):
    assert bash_complete(links, "hamctl check ", board) == [".__global", "web", "worker"]
    assert bash_complete(links, "heartbeat w", board) == ["web", "worker"]
    assert bash_complete(links, "hamctl info web/", board) == ["web/death"]
    assert bash_complete(links, "hamctl action web ", board) == ["death"]  # conditions of web
    assert bash_complete(links, "hamctl check ") == []  # no ham: nothing, and no error


def test_completing_ham_never_starts_one(links, tmp_path):
    run_dir = tmp_path / "never"
    done = subprocess.run([str(links / "ham"), f"{multicall.COMPLETE}bash:1", "--"], check=False, capture_output=True,
                          text=True, env={**env_for(links), "HAM_RUNTIME_DIR": str(run_dir)}, timeout=30)
    assert done.returncode == 0 and "plain\t--foreground\t" in done.stdout
    assert not run_dir.exists()


def test_bad_completion_request_is_a_usage_error(links):
    done = subprocess.run([str(links / "hamtools"), "--completion", "fish"], check=False, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr == "hamtools: --completion: usage: hamtools --completion bash|zsh\n"


# ---- TAB in an interactive shell ------------------------------------------------------------

class Terminal:
    """An interactive shell on a pseudo-terminal; ^T prints the line being edited."""

    def __init__(self, argv: list[str], env: dict, setup: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execvpe(argv[0], argv, env)
        self.out = b""
        self.type(setup + "\n")
        self.type("echo READY\n")
        self.expect(rb"\nREADY")

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: bytes, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.out)
            if found:
                self.out = self.out[found.end():]
                return found
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.out[-2000:]!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    self.out += os.read(self.fd, 65536)
                except OSError:
                    pass

    def line_after(self, keys: str) -> str:
        """The edited line after typing keys (TABs included), then clear it."""
        self.type(keys + "\x14")  # the shell reads ^T only once the completion is done
        line = self.expect(rb"<<(.*?)>>")[1].decode()
        self.type("\x15")  # kill the line
        return line

    def close(self) -> None:
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_tab_in_bash(links, board):
    term = Terminal(["bash", "--norc", "--noprofile", "-i"], {**env_for(links, board), "PS1": "$ "},
                    "source <(hamtools --completion bash); bind -x '\"\\C-t\": printf \"<<%s>>\\n\" \"$READLINE_LINE\"'")
    try:
        assert term.line_after("hamctl chec\t") == "hamctl check "
        assert term.line_after("hamctl check wor\t") == "hamctl check worker "
        assert term.line_after("hamctl set worker restart=on-\t") == "hamctl set worker restart=on-failure "
    finally:
        term.close()


@pytest.fixture
def zsh():
    if shutil.which("zsh") is None:
        if os.environ.get("HAMTOOLS_VM_REQUIRED"):  # CI installs it: a skip would hide a failure
            pytest.fail("zsh missing in CI")
        pytest.skip("needs zsh (apt-get install zsh)")
    return shutil.which("zsh")


ZSH_SETUP = ("autoload -Uz compinit && compinit -u -D; source <(hamtools --completion zsh); "
             "show() { print -r -- \"<<$BUFFER>>\" }; zle -N show; bindkey '^T' show")


def test_tab_in_zsh(zsh, links, board):
    term = Terminal([zsh, "-f", "-i"], {**env_for(links, board), "PS1": "% "}, ZSH_SETUP)
    try:
        assert term.line_after("hamctl chec\t") == "hamctl check "
        assert term.line_after("hamtools --compl\t") == "hamtools --completion "
        assert term.line_after("hamctl check wor\t") == "hamctl check worker "
        assert term.line_after("hamctl set worker restart=on-\t") == "hamctl set worker restart=on-failure "
        assert term.line_after("ham -t sh\t") == "ham -t shortabs "
        term.type("hamctl st\t")  # ambiguous: zsh lists them with their help
        term.expect(rb"status\s+-- Every entity")
        term.type("\x15")
    finally:
        term.close()


def test_zsh_as_an_fpath_function(zsh, links, tmp_path):
    """Saved as _hamtools in $fpath, compinit loads it by its #compdef line."""
    functions = tmp_path / "functions"
    functions.mkdir()
    (functions / "_hamtools").write_text(completion.script("zsh"))
    setup = (f"fpath=({functions} $fpath); autoload -Uz compinit && compinit -u -D; "
             "show() { print -r -- \"<<$BUFFER>>\" }; zle -N show; bindkey '^T' show")
    term = Terminal([zsh, "-f", "-i"], {**env_for(links), "PS1": "% "}, setup)
    try:
        assert term.line_after("wdt bootst\t") == "wdt bootstatus "
    finally:
        term.close()


# ---- what it offers is what the command lines are -------------------------------------------

def offered(*words: str) -> list[str]:
    return [value for kind, value, _ in completion.candidates(words[0], list(words[1:-1]), words[-1])
            if kind == "plain"]


def test_every_applet_and_every_hamctl_command_is_offered():
    assert offered("hamtools", "") == [a.name for a in registry.APPLETS] + list(completion._own_options())
    import typer.main

    from hamtools.applets import hamctl

    assert offered("hamctl", "") == list(typer.main.get_command(hamctl.app).commands)


def test_hamtools_options_come_from_its_usage_text():
    own = completion._own_options()
    usage_options = set(re.findall(r"hamtools (--[a-z-]+)", multicall.USAGE))
    assert set(own) == usage_options and own["--install"][0] == "[-s] DIR"


def test_ham_options_are_its_parsers_and_in_its_help():
    assert offered("ham", "-") == list(ham_applet.OPTIONS)
    for option in ham_applet.OPTIONS:
        assert re.search(rf"(^|[ ,\[]){re.escape(option)}([ ,\]=.]|$)", ham_applet.USAGE, re.MULTILINE), option


def test_the_scripts_name_every_applet():
    names = {a.name for a in registry.APPLETS} | {"hamtools"}
    assert set(completion.script("bash").split("complete -o nosort -F _hamtools ")[1].split()) == names
    assert set(completion.script("zsh").splitlines()[0].split()[1:]) == names
