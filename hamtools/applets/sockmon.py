"""`sockmon`: run a restart script the moment a server's socket dies (seed 000, SPEC §7).

The command line and the config file end here in a list of (TARGET, SCRIPT ARGS…) pairs and
the settings; everything is checked before anything starts (a bad line starts nothing), then
hamtools.sockmon.watch runs the pairs on one event loop.
"""

import os
import shlex
import shutil
import stat
import sys

from hamtools.core import cli
from hamtools.core.errors import EXIT_FALSE, EXIT_NOT_RUNNING, EXIT_USAGE, AppletError, describe_oserror
from hamtools.sockmon.targets import DEFAULT_TCP_TIMEOUT, TargetError, parse_target, psutil_problem
from hamtools.sockmon.watch import Settings

PROG = "sockmon"
HELP = """Run a restart script the moment a server's socket dies.

Each --watch TARGET is paired, in order, with the --restart SCRIPT that follows it; or give
--config FILE with one `TARGET SCRIPT [ARGS...]` per line (# comments, shell quoting).
TARGET is unix:PATH (stream or seqpacket; unix:@NAME for an abstract socket), tcp:HOST:PORT,
pid:PID (or pid:/PIDFILE, re-read after each restart) or name:PROG (the oldest process
called PROG; needs psutil).

When the server dies, SCRIPT runs with SOCKMON_TARGET, SOCKMON_REASON (how the watched
connection ended: eof, reset, timeout, error; exited for a process), SOCKMON_DETAIL and
SOCKMON_PID set; sockmon waits for it, then reconnects: --retries tries, --retry-interval
apart. When all fail, the give-up action runs: exit (status 1; this ends every watch, a
running script gets SIGTERM), reboot (sync, then the reboot system call; only when asked),
or CMD (run by /bin/sh with SOCKMON_REASON=give-up; that watch alone then starts a fresh
round of tries).

Nothing is polled: sockmon sleeps until a connection ends (EOF, reset, or for tcp: the
kernel's keepalive or user timeout) or a pidfd says a process exited. A pid: or name: target is dead when its process exits. A connection that
ends may just be a server dropping an idle client, so sockmon probes with a reconnect (the
first one at once, later ones at most every 0.5 s): the server is dead when the probe fails,
or when its process (known for most unix: targets) has exited as well. A probe that
connects must still be there 0.5 s later, or be closed with an EOF (accepted, then closed),
before the server counts as alive; a reset on it is re-checked at once. A server process
that exits while the connection stays up (a child holds it) is probed the same way.
"""

# Options that take a value: the pre-scan below must skip their values to see the order of
# --watch and --restart, which typer's list options do not keep.
_VALUE_OPTIONS = {"--watch", "--restart", "--config", "--retries", "--retry-interval",
                  "--on-give-up", "--tcp-timeout", "--pidfile", "--log"}


def main(argv: list[str]) -> int:
    return cli.run(build_app(argv), PROG, argv)


def build_app(argv: list[str] = ()):
    """sockmon's typer app, for the command line argv (whose order pairs --watch with
    --restart, which typer's list options do not keep); shell completion builds it bare."""
    app = cli.make_app(HELP)

    @app.command(help=HELP)
    def sockmon(
        watch: list[str] = cli.typer.Option(None, "--watch", metavar="TARGET",
                                            help="what to watch (repeatable, paired with --restart)"),
        restart: list[str] = cli.typer.Option(None, "--restart", metavar="SCRIPT",
                                              help="executable to run when the --watch before it dies"),
        config: str = cli.typer.Option(None, "--config", metavar="FILE",
                                       help="read TARGET SCRIPT [ARGS...] lines from FILE"),
        retries: int = cli.typer.Option(Settings.retries, "--retries", metavar="N", min=1,
                                        help="connection tries before giving up"),
        retry_interval: float = cli.typer.Option(Settings.retry_interval, "--retry-interval",
                                                 metavar="SECS", min=0.0,
                                                 help="seconds between two tries"),
        on_give_up: str = cli.typer.Option(Settings.on_give_up, "--on-give-up",
                                           metavar="exit|reboot|CMD",
                                           help="what to do when every try failed"),
        tcp_timeout: int = cli.typer.Option(DEFAULT_TCP_TIMEOUT, "--tcp-timeout", metavar="SECS",
                                            min=3, help="tcp: a silent peer counts as dead after"),
        daemon: bool = cli.typer.Option(False, "--daemon", help="detach into the background"),
        pidfile: str = cli.typer.Option(None, "--pidfile", metavar="FILE",
                                        help="write sockmon's pid to FILE"),
        log: str = cli.typer.Option("both", "--log", metavar="both|syslog|stderr",
                                    help="where messages go (syslog: sockmon[pid], LOG_DAEMON)"),
    ) -> None:
        if log not in ("both", "syslog", "stderr"):
            raise AppletError(f"--log {log}: expected both, syslog or stderr", EXIT_USAGE)
        if not on_give_up.strip():
            raise AppletError("--on-give-up: empty command", EXIT_USAGE)
        pairs = [(parse_watch(t, tcp_timeout), [check_script(s, f"--restart {s}")])
                 for t, s in pair_options(argv, watch or [], restart or [])]
        if config is not None:
            pairs += read_config(config, tcp_timeout)
        if not pairs:
            raise AppletError("nothing to watch: give --watch TARGET --restart SCRIPT or "
                              "--config FILE", EXIT_USAGE)
        if any(target.kind == "name" for target, _ in pairs) and (problem := psutil_problem()):
            raise AppletError(problem)
        settings = Settings(retries=retries, retry_interval=retry_interval, on_give_up=on_give_up)
        raise cli.Exit(serve(pairs, settings, daemon=daemon, pidfile=pidfile, log_to=log))

    return app


def pair_options(argv: list[str], watches: list[str], restarts: list[str]) -> list[tuple[str, str]]:
    """The --watch/--restart pairs in command-line order (each --watch, then its --restart)."""
    order: list[tuple[str, str]] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name not in _VALUE_OPTIONS:
            continue
        if not eq:
            value = next(args, "")
        if name in ("--watch", "--restart"):
            order.append((name, value))
    pairs = []
    pending: str | None = None
    for name, value in order:
        if name == "--watch":
            if pending is not None:
                raise AppletError(f"--watch {pending} has no --restart SCRIPT after it", EXIT_USAGE)
            pending = value
        else:
            if pending is None:
                raise AppletError(f"--restart {value} has no --watch TARGET before it", EXIT_USAGE)
            pairs.append((pending, value))
            pending = None
    if pending is not None:
        raise AppletError(f"--watch {pending} has no --restart SCRIPT after it", EXIT_USAGE)
    if [w for w, _ in pairs] != watches or [r for _, r in pairs] != restarts:
        raise AppletError("--watch/--restart: cannot pair these options (give each --watch "
                          "TARGET followed by its --restart SCRIPT)", EXIT_USAGE)
    return pairs


def parse_watch(text: str, tcp_timeout: int, where: str | None = None):
    try:
        return parse_target(text, tcp_timeout=tcp_timeout)
    except TargetError as err:
        raise AppletError(f"{where or '--watch'}: {err}", EXIT_USAGE) from None


def check_script(path: str, where: str) -> str:
    """The script's full path; refuse (like the seed's access(X_OK)) what cannot be run."""
    found = path if "/" in path else shutil.which(path)
    if found is None:
        raise AppletError(f"{where}: not found in PATH", EXIT_NOT_RUNNING)
    try:
        mode = os.stat(found).st_mode
    except OSError as err:
        code = EXIT_NOT_RUNNING if isinstance(err, FileNotFoundError) else EXIT_FALSE
        raise AppletError(f"{where}: {describe_oserror(err)}", code) from None
    if not stat.S_ISREG(mode):
        raise AppletError(f"{where}: not a regular file", EXIT_FALSE)
    if not os.access(found, os.X_OK):
        raise AppletError(f"{where}: not executable", EXIT_FALSE)
    return os.path.abspath(found)


def read_config(path: str, tcp_timeout: int):
    """Parse `TARGET SCRIPT [ARGS...]` lines; the first bad line fails as FILE:LINE: why."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        raise AppletError(f"--config {path}: no such file", EXIT_NOT_RUNNING) from None
    except (OSError, UnicodeDecodeError) as err:
        why = describe_oserror(err) if isinstance(err, OSError) else "not UTF-8 text"
        raise AppletError(f"--config {path}: {why}") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise AppletError(f"{where}: {str(err).lower()}", EXIT_USAGE) from None
        if not words:
            continue
        if len(words) < 2:
            raise AppletError(f"{where}: {words[0]} has no restart script "
                              "(expected TARGET SCRIPT [ARGS...])", EXIT_USAGE)
        target = parse_watch(words[0], tcp_timeout, where)
        pairs.append((target, [check_script(words[1], f"{where}: restart script {words[1]}"),
                               *words[2:]]))
    return pairs


def serve(pairs, settings, *, daemon: bool, pidfile: str | None, log_to: str) -> int:
    from hamtools.core.log import Log
    from hamtools.core.loop import Loop
    from hamtools.core.proc import daemonize
    from hamtools.sockmon.watch import Monitor

    if pidfile is not None:
        pidfile = os.path.abspath(pidfile)  # before --daemon changes to /
    if daemon:
        sys.stdout.flush()
        daemonize()
    if pidfile is not None:
        write_pidfile(pidfile)
    log = Log(PROG, stderr=log_to != "syslog" and not daemon, syslog=log_to != "stderr")
    loop = Loop()
    try:
        return Monitor(loop, log, settings, pairs).run()
    finally:
        loop.close()
        log.close()
        if pidfile is not None:
            _remove_own_pidfile(pidfile)


def write_pidfile(path: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as err:
        raise AppletError(f"write pidfile {path}: {describe_oserror(err)}") from None


def _remove_own_pidfile(path: str) -> None:
    try:
        with open(path) as handle:
            if handle.read().strip() == str(os.getpid()):
                os.unlink(path)
    except OSError:
        pass
