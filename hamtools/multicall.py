"""Busybox-style multi-call dispatch: `hamtools APPLET …` or a link named after the applet.

Reads only the static registry; imports the one applet it runs, nothing else.
"""

import os
import sys

from hamtools import __version__, registry
from hamtools.core.errors import EXIT_FALSE, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, AppletError

USAGE = """\
Usage: hamtools APPLET [ARGS...]        run an applet
   or: APPLET [ARGS...]                 through a link named after the applet
   or: hamtools --list                  list the applets
   or: hamtools --help [APPLET]         this text, or an applet's help
   or: hamtools --version
   or: hamtools --install [-s] DIR      link every applet into DIR (-s: symbolic links)
   or: hamtools --extract DIR           extract what native applets need (psutil) into DIR,
                                        for SHIV_ROOT=DIR on a read-only root
   or: hamtools --completion bash|zsh   a shell completion script for hamtools and the links
"""
COMPLETE = "--hamtools-complete="  # a completion script asking (hamtools.completion)


def _is_multicall_name(name: str) -> bool:
    # The zipapp itself (hamtools, hamtools-aarch64, hamtools.pyz) or `python -m hamtools`.
    return name.startswith("hamtools") or name == "__main__.py"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if argv[1:2] and argv[1].startswith(COMPLETE):
        from hamtools import completion

        return _guard("hamtools", lambda: completion.answer(argv))
    name = os.path.basename(argv[0] if argv else "hamtools").lstrip("-")
    if not _is_multicall_name(name):
        return run_applet(name, argv[1:])
    return _hamtools_main(argv[1:])


def _hamtools_main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help"):
        if len(args) >= 2:
            return run_applet(args[1], ["--help"])
        sys.stdout.write(_full_help())
        return EXIT_OK
    option = args[0]
    if option == "--list":
        sys.stdout.write("".join(f"{applet.name}\n" for applet in registry.APPLETS))
        return EXIT_OK
    if option == "--version":
        print(f"hamtools {__version__}")
        return EXIT_OK
    if option == "--install":
        return _guard("hamtools", lambda: install(args[1:]))
    if option == "--extract":
        return _guard("hamtools", lambda: extract(args[1:]))
    if option == "--completion":
        return _guard("hamtools", lambda: _completion(args[1:]))
    if option.startswith("-"):
        sys.stderr.write(f"hamtools: unknown option: {option}\n{USAGE}")
        return EXIT_USAGE
    return run_applet(option, args[1:])


def _full_help() -> str:
    width = max(len(applet.name) for applet in registry.APPLETS)
    rows = "".join(f"  {a.name:<{width}}  {a.summary}\n" for a in registry.APPLETS)
    return f"hamtools {__version__}\n\n{USAGE}\nApplets:\n{rows}"


def run_applet(name: str, args: list[str]) -> int:
    applet = registry.find(name)
    if applet is None:
        sys.stderr.write(f"{name}: applet not found\n")
        return EXIT_NOT_FOUND
    return _guard(applet.name, lambda: _load(applet).main(args))


def _load(applet: registry.Applet):
    __import__(applet.module)
    return sys.modules[applet.module]


def _guard(prog: str, body) -> int:
    """Run an applet body: one-line errors on stderr, never a traceback for a user."""
    try:
        code = body()
    except AppletError as err:
        sys.stderr.write(f"{prog}: {err}\n")
        return err.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`hamtools --list | head -1`); silence the flush at exit too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FALSE
    except Exception as err:  # a bug: still one line, the traceback only on request
        if os.environ.get("HAMTOOLS_DEBUG"):
            raise
        sys.stderr.write(
            f"{prog}: internal error: {type(err).__name__}: {err} "
            "(set HAMTOOLS_DEBUG=1 for the traceback)\n"
        )
        return EXIT_FALSE
    return EXIT_OK if code is None else code


def install(args: list[str]) -> int:
    symbolic = bool(args) and args[0] == "-s"
    if symbolic:
        args = args[1:]
    if len(args) != 1:
        raise AppletError("--install: usage: hamtools --install [-s] DIR", EXIT_USAGE)
    target = _own_zipapp("--install")
    directory = args[0]
    os.makedirs(directory, exist_ok=True)
    made = kept = 0
    for applet in registry.APPLETS:
        link = os.path.join(directory, applet.name)
        try:
            (os.symlink if symbolic else os.link)(target, link)
            made += 1
        except FileExistsError:
            kept += 1  # like busybox: an existing file or link is left alone
        except OSError as err:
            hint = " (use -s across filesystems)" if not symbolic else ""
            raise AppletError(f"--install: link {link}: {err.strerror}{hint}") from None
    kind = "symbolic links" if symbolic else "links"
    print(f"hamtools: {made} {kind} to {target} in {directory}, {kept} existing left alone")
    return EXIT_OK


def extract(args: list[str]) -> int:
    if len(args) != 1:
        raise AppletError("--extract: usage: hamtools --extract DIR", EXIT_USAGE)
    from hamtools import zipextract

    zipapp, root = _own_zipapp("--extract"), os.path.abspath(args[0])
    try:
        site = zipextract.native_site(zipapp, root)
    except OSError as err:
        raise AppletError(f"--extract: {root}: {err.strerror}") from None
    print(f"hamtools: {', '.join(zipextract.native_packages(zipapp))} in {site}; run with SHIV_ROOT={root}")
    return EXIT_OK


def _completion(args: list[str]) -> int:
    from hamtools import completion

    if len(args) != 1 or args[0] not in completion.SHELLS:
        raise AppletError("--completion: usage: hamtools --completion bash|zsh", EXIT_USAGE)
    sys.stdout.write(completion.script(args[0]))
    return EXIT_OK


def _own_zipapp(option: str) -> str:
    target = os.path.realpath(sys.argv[0])
    import zipfile

    if not (os.path.isfile(target) and zipfile.is_zipfile(target)):
        raise AppletError(f"{option}: {target} is not the hamtools zipapp (run it from bin/hamtools)")
    return target


def target_applet(argv: list[str]) -> registry.Applet | None:
    """The applet that main(argv) would run, or None for hamtools' own options."""
    if argv[1:2] and argv[1].startswith(COMPLETE):
        return None
    name = os.path.basename(argv[0] if argv else "hamtools").lstrip("-")
    if not _is_multicall_name(name):
        return registry.find(name)
    args = argv[1:]
    if args[:1] in (["-h"], ["--help"]) and len(args) >= 2:
        return registry.find(args[1])
    if args and not args[0].startswith("-"):
        return registry.find(args[0])
    return None
