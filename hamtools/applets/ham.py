"""`ham`: the High Availability Manager daemon (SPEC §3).

Options are parsed by hand, not with typer or getopt (which imports gettext and re): the
daemon's resident size is budgeted against a bare pidfd loop (SPEC §1, issue 4).
"""

import grp
import os
import sys

from hamtools.core import runtime
from hamtools.core.errors import EXIT_USAGE, AppletError

USAGE = """\
Usage: ham [-v...] [-V N] [-d] [-f FILE] [-t none|relative|absolute|shortabs]
           [--runtime-dir DIR] [--group GROUP] [--foreground] [--stop-entities]
           [--no-guardian] [--config FILE]... [--metrics-file FILE.prom]
           [--watchdog DEV [--watchdog-timeout S] [--shutdown-timeout S]
           [--watchdog-record FILE]] [--realtime]

The High Availability Manager (QNX ham): supervises entities (spawned, adopted and
self-attached processes), fires conditions (death, abnormal death, detach, restart, missed
heartbeats, attach, state, raise) and runs their actions (restart, execute, waitfor,
notify pulse/signal, heartbeat_healthy, log). Drive it with `hamctl` or hamtools.ham.

QNX ham's options, the same letters and meanings:
  -v...              more verbose (each -v adds one; default verbosity 1)   QNX: ham -v
  -V N               verbosity N                                            QNX: ham -V
  -d                 no internal verbosity (0)                              QNX: ham -d
  -f FILE            log to FILE (default stderr)                           QNX: ham -f
  -t MODE            log timestamps: none, relative (default), absolute,    QNX: ham -t
                     shortabs
  -h, -?, --help     this text                                              QNX: ham -h, -?

hamtools' own (QNX ham has none of these):
  --runtime-dir DIR  sockets, state and journal (default $HAM_RUNTIME_DIR or /run/ham)
  --group GROUP      group of the control socket (default root's)
  --foreground       do not detach (default: detach once the sockets are up)
  --stop-entities    on SIGTERM, stop the entities too (default: they keep running)
  --no-guardian      run without the guardian (QNX ham's Guardian is always there): by
                     default a small second process becomes ham when ham dies, and ham
                     starts a new guardian when that one dies
  --config FILE      services to run (repeatable): FILE.toml is TOML, anything else a
                     seed 001 startup file; a bad line stops ham before anything starts;
                     SIGHUP or `hamctl reload` applies changed files
  --watchdog DEV     hold the hardware watchdog DEV and feed it (every third of its timeout),
                     except while a hung worker's kill is pending: one that cannot be killed
                     resets the board, and the next boot's `hamctl status` names it
  --watchdog-timeout S   set the watchdog's timeout (default: the driver's)
  --shutdown-timeout S   on SIGTERM the watchdog is left armed with this timeout (default 600)
  --watchdog-record FILE where the culprit is written before feeding stops, to outlive the
                     reset (default /var/lib/ham/watchdog.json)
  --realtime         lock ham's memory and run it SCHED_FIFO (what it starts does not
                     inherit it)
  --metrics-file FILE.prom   write Prometheus metrics there for node_exporter's textfile
                     collector (restarts, deaths, missed heartbeats, up, ham failures, the
                     watchdog), atomically, a moment after each change

Takeover (QNX's Guardian): the guardian execs ham again with ham's fds (lock, sockets,
watchdog: nothing is closed); the new ham resumes from the saved state, re-adopts every
entity and counts ham_failures. `hamctl reexec` replaces ham with a new zipapp the same way,
in place.

Signals: SIGTERM stops ham (a held watchdog stays armed with the shutdown timeout; `hamctl
stop`, QNX's ham_stop(), stops the guardian first and closes the watchdog with the magic 'V');
SIGHUP reloads; SIGINT, SIGQUIT, SIGPIPE, SIGUSR1/2 and SIGALRM are ignored (QNX's ham ignores
every signal it can); the guardian ignores them too and passes SIGTERM and SIGHUP on to ham. A
second ham on the same runtime directory refuses to start. Under a notify socket (systemd
Type=notify) ham reports READY=1 with MAINPID=, and WATCHDOG=1 (and MAINPID= again after a
takeover).
"""

STAMPS = ("none", "relative", "absolute", "shortabs")


def main(argv: list[str]) -> int:
    opts = parse_options(argv)
    settings = {"verbosity": 1, "extra": 0, "log": None, "stamps": "relative",
                "runtime_dir": runtime.runtime_dir(), "gid": 0, "foreground": False,
                "stop_entities": False, "configs": [], "watchdog": None, "realtime": False,
                "guardian": True, "metrics_file": None}
    watchdog = {}
    for opt, value in opts:
        if opt in ("-h", "-?", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if opt == "-v":
            settings["extra"] += 1
        elif opt == "-V":
            settings["verbosity"] = _number(value, "-V")
            settings["extra"] = 0
        elif opt == "-d":
            settings["verbosity"], settings["extra"] = 0, 0
        elif opt == "-f":
            settings["log"] = value
        elif opt == "-t":
            if value not in STAMPS:
                raise AppletError(f"-t {value}: use one of {', '.join(STAMPS)}", EXIT_USAGE)
            settings["stamps"] = value
        elif opt == "--runtime-dir":
            settings["runtime_dir"] = os.path.abspath(value)
        elif opt == "--group":
            settings["gid"] = _group(value)
        elif opt == "--foreground":
            settings["foreground"] = True
        elif opt == "--stop-entities":
            settings["stop_entities"] = True
        elif opt == "--config":
            settings["configs"].append(os.path.abspath(value))
        elif opt == "--watchdog":
            watchdog["path"] = value
        elif opt == "--watchdog-timeout":
            watchdog["timeout"] = _seconds(value, opt)
        elif opt == "--shutdown-timeout":
            watchdog["shutdown_timeout"] = _seconds(value, opt)
        elif opt == "--watchdog-record":
            watchdog["record"] = os.path.abspath(value)
        elif opt == "--realtime":
            settings["realtime"] = True
        elif opt == "--no-guardian":
            settings["guardian"] = False
        elif opt == "--metrics-file":
            settings["metrics_file"] = _metrics_path(value)
    if watchdog and "path" not in watchdog:
        raise AppletError("--watchdog-timeout, --shutdown-timeout and --watchdog-record go with "
                          "--watchdog DEV (see ham --help)", EXIT_USAGE)
    settings["watchdog"] = watchdog or None
    settings["verbosity"] += settings.pop("extra")
    # Without -v/-V/-d, a ham started again keeps the verbosity hamctl last set.
    settings["keep_verbosity"] = not any(opt in ("-v", "-V", "-d") for opt, _ in opts)
    settings["argv"] = rerun_arguments(opts) if settings.pop("guardian") else None
    if os.environ.get("HAM_HANDOVER"):  # the guardian, or a re-exec: already in the background,
        settings["foreground"] = settings["keep_verbosity"] = True  # and hamctl's verbosity holds
    from hamtools.core import relaunch

    relaunch.exec_lean("ham", argv)  # the daemon runs without the zipapp's launcher modules
    return run(**settings)


# Every option and what follows it: None for a flag, else its value as --help names it (shell
# completion offers paths for FILE and DEV, directories for DIR, unix groups for GROUP) or
# the tuple of its choices.
OPTIONS = {
    "-v": None, "-V": "N", "-d": None, "-f": "FILE", "-t": STAMPS, "-h": None, "-?": None,
    "--help": None, "--runtime-dir": "DIR", "--group": "GROUP", "--foreground": None,
    "--stop-entities": None, "--config": "FILE", "--watchdog": "DEV", "--watchdog-timeout": "S",
    "--shutdown-timeout": "S", "--watchdog-record": "FILE", "--realtime": None,
    "--no-guardian": None, "--metrics-file": "FILE",
}


def parse_options(argv: list[str]) -> list[tuple[str, str]]:
    """QNX-style short options (-vvv, -V 3, -V3, -f FILE) and GNU long ones (--group G,
    --group=G), as (option, value) pairs; anything else is a usage error."""
    def usage(message: str) -> AppletError:
        return AppletError(f"{message} (see ham --help)", EXIT_USAGE)

    opts, args = [], iter(argv)
    for arg in args:
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            takes = OPTIONS.get(name, False)  # False: no such option
            if takes is None and not has_value:
                opts.append((name, ""))
            elif takes:
                value = value if has_value else next(args, None)
                if value is None:
                    raise usage(f"option {name} requires an argument")
                opts.append((name, value))
            else:
                raise usage(f"option {name} not recognized")
        elif arg.startswith("-") and len(arg) > 1:
            for at, letter in enumerate(arg[1:], 2):
                takes = OPTIONS.get("-" + letter, False)
                if takes is None:
                    opts.append(("-" + letter, ""))
                elif takes:
                    value = arg[at:] or next(args, None)
                    if value is None:
                        raise usage(f"option -{letter} requires an argument")
                    opts.append(("-" + letter, value))
                    break
                else:
                    raise usage(f"option -{letter} not recognized")
        else:
            raise usage(f"unexpected argument {arg!r}")
    return opts


PATH_OPTIONS = ("-f", "--runtime-dir", "--config", "--watchdog", "--watchdog-record", "--metrics-file")


def rerun_arguments(opts: list[tuple[str, str]]) -> list[str]:
    """ham's options as the guardian or a re-exec runs ham again: paths made absolute (ham
    works from / once detached), a value always in its own word."""
    argv = []
    for opt, value in opts:
        argv.append(opt)
        if opt in PATH_OPTIONS:
            argv.append(os.path.abspath(value))
        elif OPTIONS.get(opt) is not None:
            argv.append(value)
    return argv


def _number(text: str, option: str) -> int:
    if not text.isdigit():
        raise AppletError(f"{option} {text}: not a number", EXIT_USAGE)
    return int(text)


def _seconds(text: str, option: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise AppletError(f"{option} {text}: whole seconds from 1 to 65535", EXIT_USAGE)
    return int(text)


def _metrics_path(text: str) -> str:
    path = os.path.abspath(text)  # ham works from / once detached
    if not os.path.isdir(os.path.dirname(path)):
        raise AppletError(f"--metrics-file {text}: {os.path.dirname(path)} is not a directory", EXIT_USAGE)
    return path


def _group(name: str) -> int:
    try:
        return int(name) if name.isdigit() else grp.getgrnam(name).gr_gid
    except KeyError:
        raise AppletError(f"--group {name}: no such group", EXIT_USAGE) from None


def run(*, verbosity, keep_verbosity, log, stamps, runtime_dir, gid, foreground, stop_entities,
        configs, watchdog, realtime, argv, metrics_file) -> int:
    ready = None if foreground else _detach(keep_stderr=log is None)
    from hamtools.core.loop import Loop
    from hamtools.hamd.daemon import CannotStart, Ham
    from hamtools.hamd.hlog import HamLog

    os.environ["HAM_RUNTIME_DIR"] = runtime_dir  # what ham starts finds ham
    loop = Loop()
    try:
        hamlog = HamLog(loop.clock, verbosity=verbosity, path=log, stamps=stamps)
        loop.on_error = lambda err: _internal_error(hamlog, err)
        ham = Ham(loop, runtime_dir, hamlog, gid=gid, stop_entities=stop_entities,
                  keep_verbosity=keep_verbosity, argv=argv)
        if metrics_file is not None:
            from hamtools.hamd.metrics import MetricsFile

            ham.metrics = MetricsFile(metrics_file)
        ham.start(configs, watchdog=watchdog, realtime=realtime)
    except CannotStart as why:
        return _fail(ready, f"cannot start: {why}")
    except ValueError as bad:  # a configuration error: FILE:LINE: message, nothing started
        return _fail(ready, str(bad))
    except OSError as err:
        return _fail(ready, f"cannot start in {runtime_dir}: {err.strerror or err}")
    if ready is not None:
        os.write(ready, b"ok")
        os.close(ready)
    try:
        loop.run()
    finally:
        ham.close()
        loop.close()
    return 0


def _internal_error(log, err: Exception) -> None:
    """A bug in one of ham's callbacks: logged where it happened; ham goes on."""
    import traceback

    where = traceback.extract_tb(err.__traceback__)[-1]
    log(0, f"internal error: {type(err).__name__}: {err} "
           f"({os.path.basename(where.filename)}:{where.lineno} in {where.name})")


def _fail(ready: int | None, message: str) -> int:
    if ready is None:
        raise AppletError(message)
    os.write(ready, message.encode())
    os.close(ready)
    return 1


def _detach(keep_stderr: bool) -> int:
    """Fork into the background; the parent exits once the child says it is up (or why not).
    stderr stays only when it is ham's log (no -f): else nothing keeps the caller's pipe open."""
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        answer = b""
        while chunk := os.read(read_end, 4096):
            answer += chunk
        if answer == b"ok":
            os._exit(0)
        sys.stderr.write(f"ham: {answer.decode(errors='replace') or 'died while starting'}\n")
        os._exit(1)
    os.close(read_end)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if not keep_stderr:
        os.dup2(null, 2)
    if null > 2:
        os.close(null)
    os.chdir("/")
    return write_end
