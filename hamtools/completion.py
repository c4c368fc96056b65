"""Shell completion for bash and zsh: `hamtools APPLET ...` and the applet links.

Made from what already describes each command line, so it cannot drift: the applet registry
(names, summaries, and where each applet's command line is described), each typer app's click
tree (commands, options, arguments and their completion callbacks), the option tables the
hand parsers read (ham, heartbeat), and hamtools' own usage text.

`hamtools --completion bash|zsh` prints the script to source. On TAB the script runs the
command being completed with MARK as its first argument, then the line's words;
multicall.main hands that to answer(), which prints one candidate a line,
KIND<TAB>VALUE<TAB>HELP: KIND plain (VALUE itself), or file, dir or group (the shell
completes those from the word typed). A first argument an older zipapp does not know is a
usage error there, never a daemon started by a TAB.
"""

import os
import re
import sys

from hamtools import multicall, registry

MARK = multicall.COMPLETE  # then SHELL:INDEX, INDEX the current word's in the line
SHELLS = ("bash", "zsh")
# What a value's metavar says the shell should complete (typer apps' and the hand parsers').
METAVAR_KINDS = {"FILE": "file", "DEV": "file", "SCRIPT": "file", "PIDFILE": "file",
                 "DIR": "dir", "GROUP": "group"}


def answer(argv: list[str]) -> int:
    shell, _, index = argv[1][len(MARK):].partition(":")
    words = argv[2:int(index) + 2]  # up to the current word, which comes last
    before, current, cut = _bash_words(words) if shell == "bash" else (words[:-1], words[-1], 0)
    for kind, value, help_text in candidates(os.path.basename(argv[0]), before, current):
        sys.stdout.write(f"{kind}\t{value[cut:] if kind == 'plain' else value}\t{help_text}\n")
    return 0


def _bash_words(words: list[str]) -> tuple[list[str], str, int]:
    """bash cuts words at = and : (COMP_WORDBREAKS): the words joined again, and how much of
    the current one readline will not replace (the candidates must leave it out): all of it
    before the last = or :."""
    joined: list[str] = []
    glue = False
    for word in words:
        breaker = bool(word) and set(word) <= set("=:")
        if joined and (glue or breaker):
            joined[-1] += word
        else:
            joined.append(word)
        glue = breaker
    replaced = "" if glue else words[-1]
    return joined[:-1], joined[-1], len(joined[-1]) - len(replaced)


def candidates(prog: str, words: list[str], current: str) -> list[tuple[str, str, str]]:
    """(kind, value, help) for the word `current` after `words`, on prog's command line."""
    name = prog.lstrip("-")
    if not multicall._is_multicall_name(name):
        applet = registry.find(name)
        found = _applet(applet, words, current) if applet else []
    elif not words:
        found = [("plain", a.name, a.summary) for a in registry.APPLETS] + [
            ("plain", option, help_text) for option, (_, help_text) in _own_options().items()]
    elif words[0] in _own_options():
        found = _usage_values(_own_options()[words[0]][0], words[1:], current)
    else:
        applet = registry.find(words[0])
        found = _applet(applet, words[1:], current) if applet else []
    return [item for item in found if item[0] != "plain" or item[1].startswith(current)]


def _own_options() -> dict[str, tuple[str, str]]:
    """hamtools' own options from its usage text: option -> (what follows it, help)."""
    found = {}
    for line in multicall.USAGE.splitlines():
        match = re.search(r"hamtools (--\S+)((?: \S+)*?)(?:\s{2,}(.*))?$", line)
        if match:
            found[match[1]] = (match[2].strip(), match[3] or "")
    return found


def _usage_values(spec: str, typed: list[str], current: str) -> list[tuple[str, str, str]]:
    """What comes next by a usage text like `[-s] DIR`: an optional flag is offered when the
    word starts with '-', else what the next metavar names."""
    tokens = [token.strip("[]") for token in spec.split()]
    at = 0
    for word in typed:
        while at < len(tokens) - 1 and tokens[at].startswith("-") and word != tokens[at]:
            at += 1
        at += 1
    while at < len(tokens):
        if not tokens[at].startswith("-"):
            return _metavar_values(tokens[at])
        if current.startswith("-"):
            return [("plain", tokens[at], "")]
        at += 1
    return []


def _metavar_values(metavar) -> list[tuple[str, str, str]]:
    if isinstance(metavar, tuple) or "|" in metavar:
        return [("plain", choice, "") for choice in (metavar if isinstance(metavar, tuple)
                                                      else metavar.split("|"))]
    if metavar == "APPLET":
        return [("plain", a.name, a.summary) for a in registry.APPLETS]
    if metavar == "ENTITY":  # an entity of the ham that runs now
        from hamtools.applets import hamctl

        return [("plain", name, "") for name in hamctl._paths(1)]
    kind = METAVAR_KINDS.get(metavar)
    return [(kind, "", "")] if kind else []


def _applet(applet: registry.Applet, words: list[str], current: str) -> list[tuple[str, str, str]]:
    module, _, attribute = applet.cli.partition(":")
    __import__(module)
    if not attribute:  # a hand parser's table
        table = sys.modules[module]
        return _from_table(table.OPTIONS, getattr(table, "ARGUMENTS", ()), words, current)
    app = getattr(sys.modules[module], attribute)
    return _from_click(app if hasattr(app, "registered_commands") else app(), words, current)


def _from_table(options: dict, arguments: tuple, words: list[str], current: str):
    if words and options.get(words[-1]):  # the value of the option before
        return _metavar_values(options[words[-1]])
    if current.startswith("-"):
        return [("plain", option, "") for option in options]
    given = [w for at, w in enumerate(words) if not w.startswith("-") and not (at and options.get(words[at - 1]))]
    return _metavar_values(arguments[len(given)]) if len(given) < len(arguments) else []


def _from_click(app, words: list[str], current: str) -> list[tuple[str, str, str]]:
    """click's own completion resolver (in typer 0.28's vendored click, pinned): the context
    the words reach, then what completes the current word there."""
    import typer.main
    from typer._click.core import Parameter
    from typer._click.shell_completion import _resolve_context, _resolve_incomplete

    command = typer.main.get_command(app)
    ctx = _resolve_context(command, {}, command.name or "", list(words))
    target, incomplete = _resolve_incomplete(ctx, list(words), current)
    items = [(item.type if item.type in ("file", "dir") else "plain", str(item.value), item.help or "")
             for item in target.shell_complete(ctx, incomplete)]
    if not items and isinstance(target, Parameter):  # nothing of its own: its metavar may say
        items = _metavar_values(target.metavar or "")
    prefix = current[:len(current) - len(incomplete)]  # --option= before the value
    return [(kind, prefix + value if kind == "plain" else value, help_text)
            for kind, value, help_text in items]


# ---- the scripts ----------------------------------------------------------------------------

BASH = """\
# bash completion for hamtools and its applets: `hamtools --completion bash`
_hamtools() {
    local kind value help cur=${COMP_WORDS[COMP_CWORD]}
    COMPREPLY=()
    while IFS=$'\\t' read -r kind value help; do
        case $kind in
            plain) COMPREPLY+=("$value")
                   case $value in *= | */) compopt -o nospace ;; esac ;;
            file) compopt -o filenames; mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -f -- "$cur") ;;
            dir) compopt -o filenames; mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -d -- "$cur") ;;
            group) mapfile -t -O "${#COMPREPLY[@]}" COMPREPLY < <(compgen -g -- "$cur") ;;
        esac
    done < <("${COMP_WORDS[0]}" MARKbash:"$COMP_CWORD" "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)
}
complete -o nosort -F _hamtools NAMES
"""

ZSH = """\
#compdef NAMES
# zsh completion for hamtools and its applets: `hamtools --completion zsh` (source it, or
# save it as _hamtools in a directory of $fpath)
_hamtools() {
    local -a spaced unspaced
    local line kind value help
    for line in "${(@f)$("${words[1]}" MARKzsh:$((CURRENT - 1)) "${(@Q)words[2,CURRENT]}" 2>/dev/null)}"; do
        kind=${line%%$'\\t'*}; line=${line#*$'\\t'}; value=${line%%$'\\t'*}; help=${line#*$'\\t'}
        case $kind in
            plain) case $value in
                       *= | */) unspaced+=("${value//:/\\\\:}${help:+:$help}") ;;
                       *) spaced+=("${value//:/\\\\:}${help:+:$help}") ;;
                   esac ;;
            file) _files ;;
            dir) _files -/ ;;
            group) _groups ;;
        esac
    done
    (( ${#spaced} )) && _describe -t values value spaced
    (( ${#unspaced} )) && _describe -t values value unspaced -S ''
    return 0
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _hamtools "$@"
else
    compdef _hamtools NAMES
fi
"""


def script(shell: str) -> str:
    names = " ".join(["hamtools", *(applet.name for applet in registry.APPLETS)])
    return {"bash": BASH, "zsh": ZSH}[shell].replace("MARK", MARK).replace("NAMES", names)
