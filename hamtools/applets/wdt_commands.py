"""`wdt`'s typer app: help, the commands that change a watchdog, and `feed`.

Each change opens the device once and closes it the way it found it: a stopped watchdog is
closed with the magic 'V' (the change does not arm it), an active one without it (it stays
armed), except for the commands whose whole point is to arm (ping, enable) or to stop it
(magic-close, disable).
"""

import errno

from hamtools.applets import wdt, wdt_feed
from hamtools.core import cli, watchdog, watchdog_sysfs
from hamtools.core.errors import AppletError

Option, Argument = cli.typer.Option, cli.typer.Argument

app = cli.make_app(
    "Query, set, ping, magic-close and feed the Linux watchdog. The device is -d DEV, else "
    "/dev/watchdog0, else /dev/watchdog.",
    epilog="Queries read sysfs first and open the device only when that is safe (nowayout "
    "known to be off, watchdog stopped), ending with the magic close. Nothing is written to a "
    "DEV that is not a watchdog. Exit codes: 0 ok, 1 failed (or, for bootstatus, the last "
    "reset was not the watchdog's), 2 usage, 3 no such device.",
)


def run(argv: list[str]) -> int:
    return cli.run(app, "wdt", argv)


@app.callback()
def _options(ctx: cli.typer.Context, device: str = Option(
        None, "-d", "--device", metavar="DEV", help="the watchdog device node")):
    ctx.obj = device


QUERY_HELP = {
    "info": "Everything util-linux wdctl shows: identity, timeouts, governors, the flag table.",
    "list": "Every watchdog in /sys/class/watchdog with its state, timeout and nowayout.",
    "timeleft": "Seconds left before the watchdog fires (drivers that can tell only).",
    "bootstatus": "Why the machine last reset: exit 0 if it was the watchdog, 1 if not.",
}


def _query_command(name: str) -> None:
    """The typer face of a query that wdt's hand parser also serves (same code behind)."""
    def command(ctx: cli.typer.Context,
                as_json: bool = Option(False, "--json", help="print JSON")):
        raise cli.Exit(wdt.QUERY_COMMANDS[name](ctx.obj, as_json))

    command.__doc__ = QUERY_HELP[name]
    app.command(name)(command)


for _name in wdt.QUERIES:
    _query_command(_name)


# A negative N is a value to refuse with its range, not an unknown option "-1".
NUMBER_ARGUMENT = {"ignore_unknown_options": True}
FORCE = Option(False, "--force", help="open it even when it is stopped and nowayout is set "
                                      "(that arms it for good)")


@app.command("set-timeout", context_settings=NUMBER_ARGUMENT)
def set_timeout(ctx: cli.typer.Context,
                seconds_text: str = Argument(..., metavar="N", help="seconds, 1 or more"),
                force: bool = FORCE):
    """Set the timeout (WDIOC_SETTIMEOUT); prints the value the driver took."""
    seconds = wdt.parse_seconds(seconds_text, "set-timeout", 1)

    def body(device, snap):
        try:
            return device.set_timeout(seconds)
        except OSError as err:
            raise _ioctl_error("set-timeout", device, snap, err, seconds, _timeout_range(snap))

    took = _change("set-timeout", ctx.obj, body, force=force)
    print(f"Timeout has been set to {took} second{'' if took == 1 else 's'}.")


@app.command("set-pretimeout", context_settings=NUMBER_ARGUMENT)
def set_pretimeout(ctx: cli.typer.Context,
                   seconds_text: str = Argument(..., metavar="N",
                                                help="seconds before the timeout; 0 turns it off"),
                   force: bool = FORCE):
    """Set the pretimeout (WDIOC_SETPRETIMEOUT): the governor acts N s before the reset."""
    seconds = wdt.parse_seconds(seconds_text, "set-pretimeout", 0)

    def body(device, snap):
        try:
            device.set_pretimeout(seconds)
            return device.get_pretimeout()  # the kernel does not write the value back
        except OSError as err:
            timeout = snap.timeout if snap.timeout is not None else _try(device.get_timeout)
            why = f"it must be less than the timeout ({timeout} s)" if timeout else None
            raise _ioctl_error("set-pretimeout", device, snap, err, seconds, why)

    took = _change("set-pretimeout", ctx.obj, body, force=force)
    print(f"Pre-timeout has been set to {took} second{'' if took == 1 else 's'}.")


@app.command("set-governor")
def set_governor(ctx: cli.typer.Context,
                 name: str = Argument(..., metavar="NAME", help="e.g. noop or panic")):
    """Choose what happens at the pretimeout (sysfs pretimeout_governor; no open)."""
    snap = wdt.probe("set-governor", ctx.obj, ())
    if snap.sysfs_dir is None:
        raise AppletError(f"set-governor: {snap.device} has no watchdog sysfs directory")
    if snap.governor is None and not snap.governors:
        raise AppletError(f"set-governor: not supported by {snap.identity} "
                          "(no pretimeout governors in sysfs)")
    try:
        watchdog_sysfs.write_attribute(snap.sysfs_dir, "pretimeout_governor", name)
    except OSError as err:
        if err.errno == errno.EINVAL:
            raise AppletError(f"set-governor {name}: no such governor (available: "
                              f"{' '.join(snap.governors or [])})") from None
        raise AppletError(f"set-governor: {watchdog.describe_error(err)}") from None
    print(f"Pre-timeout governor has been set to {name}.")


@app.command("ping")
def ping(ctx: cli.typer.Context):
    """Feed it once and leave it armed (like `echo > /dev/watchdog`): arms a stopped one."""
    def body(device, snap):
        device.ping()
        return _armed_message(device, snap, "pinged")

    print(_change("ping", ctx.obj, body, arm=True))


@app.command("enable")
def enable(ctx: cli.typer.Context):
    """Start it (WDIOS_ENABLECARD) and leave it armed."""
    def body(device, snap):
        try:
            device.set_options(watchdog.WDIOS_ENABLECARD)
        except OSError as err:
            if not watchdog.is_unsupported(err):  # else opening it already started it
                raise _ioctl_error("enable", device, snap, err) from None
        return _armed_message(device, snap, "enabled")

    print(_change("enable", ctx.obj, body, arm=True))


@app.command("magic-close")
def magic_close(ctx: cli.typer.Context):
    """Open it, write the magic 'V', close: stops it unless nowayout is set."""
    _stop("magic-close", ctx.obj, lambda device, snap: None)


@app.command("disable")
def disable(ctx: cli.typer.Context):
    """Stop it with WDIOS_DISABLECARD (then the magic close too)."""
    def body(device, snap):
        try:
            device.set_options(watchdog.WDIOS_DISABLECARD)
        except OSError as err:
            if err.errno == errno.EBUSY:  # the kernel's answer to stopping under nowayout
                raise AppletError(f"disable: nowayout is set: {snap.device} cannot be stopped")
            raise _ioctl_error("disable", device, snap, err) from None

    _stop("disable", ctx.obj, body)


@app.command("feed")
def feed(ctx: cli.typer.Context,
         device: str = Argument(None, metavar="DEV", help="default: -d DEV, /dev/watchdog0, "
                                "/dev/watchdog"),
         timeout: str = Option("60", "-T", metavar="N[ms]",
                               help="reboot after N seconds if not fed"),
         interval: str = Option(None, "-t", metavar="N[ms]",
                                help="feed every N seconds (default: half the timeout)"),
         foreground: bool = Option(False, "-F", help="run in the foreground"),
         nowayout: bool = Option(False, "--nowayout",
                                 help="on SIGTERM/SIGINT/SIGHUP close without the magic 'V': "
                                      "the watchdog stays armed"),
         pidfile: str = Option(None, "-p", "--pidfile", metavar="FILE",
                               help="write the feeder's pid here")):
    """Keep the watchdog fed, busybox `watchdog` style: daemonizes before opening the device
    unless -F, writes a byte every -t, and on SIGTERM/SIGINT/SIGHUP stops it with the magic
    close (unless --nowayout). Use 500ms to give milliseconds."""
    raise cli.Exit(wdt_feed.feed(device or ctx.obj, timeout, interval, foreground, nowayout,
                                 pidfile))


# ---- opening for a change -------------------------------------------------------------------

def _change(what: str, device: str | None, body, *, force: bool = False, arm: bool = False):
    """body(device, snapshot) on the open device; closed as found, or left armed if arm."""
    snap = wdt.probe(what, device, ())
    was_active = snap.state == "active"
    if not arm and not force and snap.nowayout and not was_active:
        raise AppletError(f"{what}: {snap.device} is stopped and nowayout is set: opening it "
                          "would arm it for good (add --force to do it anyway)")
    try:
        return watchdog.session(snap.device, lambda opened: body(opened, snap),
                                disarm=not (arm or was_active))
    except OSError as err:  # from the open: body turns its own errors into AppletError
        raise wdt.open_error(what, snap.device, err) from None


def _stop(what: str, device: str | None, body) -> None:
    snap = wdt.probe(what, device, ())
    if snap.state == "inactive":  # opening would start it; with nowayout for good
        print(f"{snap.device}: already inactive")
        return
    try:
        watchdog.session(snap.device, lambda opened: body(opened, snap), disarm=True)
    except OSError as err:
        raise wdt.open_error(what, snap.device, err) from None
    if snap.sysfs_dir is None:
        print(f"{snap.device}: magic close written")
    elif watchdog_sysfs.read_attribute(snap.sysfs_dir, "state") == "active":
        why = "nowayout is set" if snap.nowayout else "the driver did not stop it"
        raise AppletError(f"{what}: {snap.device} is still active: {why}")
    else:
        print(f"{snap.device}: stopped")


def _armed_message(device: watchdog.Watchdog, snap, done: str) -> str:
    timeout = snap.timeout if snap.timeout is not None else _try(device.get_timeout)
    if not device.info.options & watchdog.WDIOF_MAGICCLOSE:
        return (f"{snap.device}: {done}, but closing it stops it again "
                f"({device.info.identity} has no magic close; use `wdt feed`)")
    when = f"{timeout} s from now" if timeout else "at its timeout"
    return f"{snap.device}: {done}; it stays armed and resets the machine {when} unless fed"


def _timeout_range(snap) -> str | None:
    if snap.min_timeout is None or not snap.max_timeout:  # 0: the core emulates any length
        return None
    return f"allowed {snap.min_timeout}..{snap.max_timeout} s"


def _ioctl_error(what: str, device: watchdog.Watchdog, snap, err: OSError, value=None,
                 why_invalid: str | None = None) -> AppletError:
    identity = snap.identity or device.info.identity
    if err.errno == errno.EINVAL and value is not None:
        detail = f": {why_invalid}" if why_invalid else ""
        return AppletError(f"{what} {value}: invalid value for {identity or snap.device}{detail}")
    return AppletError(f"{what}: {watchdog.describe_error(err, identity)}")


def _try(call):
    try:
        return call()
    except OSError:
        return None
