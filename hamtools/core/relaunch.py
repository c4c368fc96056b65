"""Run an applet in a fresh, lean interpreter: the same Python and flags, the same hamtools
(from the zipapp or a checkout), without the modules that launching a zipapp loads.

`python3 bin/hamtools ham` runs the zip through runpy, which brings importlib.util,
contextlib, collections and functools along: most of a megabyte that a long-running daemon
would carry for nothing (ham's resident size is budgeted against a bare pidfd loop). A
daemon therefore execs itself once, in place (same pid, fds, cwd and environment), as
`python3 [flags] -c BOOT ROOT APPLET ARGS...`. The guardian and `hamctl reexec` start ham
the same way.
"""

import os
import sys

# Run by `python -c`: sys.argv is then ["-c", ROOT, APPLET, ARGS...].
BOOT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from hamtools.core.relaunch import booted; booted()")


def package_root() -> str:
    """The directory holding the hamtools package: the zip's site-packages, or a checkout."""
    import hamtools

    return os.path.dirname(os.path.dirname(os.path.abspath(hamtools.__file__)))


def root_of(zipapp: str) -> str:
    """The package root of a hamtools zipapp (its site-packages), or of a checkout."""
    return zipapp if os.path.isdir(zipapp) else os.path.join(zipapp, "site-packages")


def interpreter_flags() -> list[str]:
    """The command-line flags this interpreter was started with that change behaviour."""
    flags = sys.flags
    args = []
    if flags.isolated:
        args.append("-I")
    else:
        args += ["-E"] * bool(flags.ignore_environment) + ["-s"] * bool(flags.no_user_site)
    args += ["-S"] * bool(flags.no_site) + ["-B"] * bool(flags.dont_write_bytecode)
    args += ["-O"] * flags.optimize
    for key, value in sys._xoptions.items():
        args += ["-X", key if value is True else f"{key}={value}"]
    return args


def command(applet: str, args: list[str], root: str | None = None) -> list[str]:
    return [sys.executable, *interpreter_flags(), "-c", BOOT, root or package_root(), applet, *args]


def is_lean() -> bool:
    """False in an interpreter that a zipapp or `python -m` started (runpy is loaded)."""
    return "runpy" not in sys.modules


def exec_lean(applet: str, args: list[str]) -> None:
    """Replace this process with the lean form of applet; returns only if that cannot be done
    (the caller then goes on in this interpreter)."""
    if is_lean() or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, command(applet, args))
    except OSError:
        return


def booted() -> None:
    """The entry BOOT calls: run the applet as multi-call dispatch would, and exit."""
    from hamtools import multicall
    from hamtools.core import libc

    applet = sys.argv[1]
    libc.call("prctl", 15, applet.encode()[:15] + b"\0", 0, 0, 0)  # PR_SET_NAME: ps, top, pgrep
    sys.argv[0] = applet
    sys.exit(multicall.run_applet(applet, sys.argv[2:]))
