"""`wdt`: the Linux watchdog tool (SPEC §8) — query, set, ping, magic-close and feed.

The queries (info, list, timeleft, bootstatus) go through a small hand parser and never import
typer, so `wdt info` costs little more than the interpreter's own start. Everything else, and
anything the hand parser does not recognise (--help included), goes to the typer app in
wdt_commands, which accepts the same query forms too.

HAMTOOLS_SYSFS (default /sys) points every sysfs read elsewhere: a fake tree for tests.
"""

import os
import sys

from hamtools.core import watchdog, watchdog_probe, watchdog_sysfs
from hamtools.core.errors import EXIT_FALSE, EXIT_NOT_RUNNING, EXIT_OK, EXIT_USAGE, AppletError

QUERIES = ("info", "list", "timeleft", "bootstatus")


def main(argv: list[str]) -> int:
    query = parse_query(argv)
    if query is None:
        from hamtools.applets import wdt_commands

        return wdt_commands.run(argv)
    device, command, as_json = query
    return QUERY_COMMANDS[command](device, as_json)


def parse_query(argv: list[str]) -> tuple[str | None, str, bool] | None:
    """`[-d DEV] QUERY [--json]` as (device, query, json), or None for the typer app."""
    device, command, as_json = None, None, False
    args = iter(argv)
    for arg in args:
        if command is None:
            if arg in ("-d", "--device"):
                device = next(args, None)
                if device is None:
                    return None
            elif arg.startswith("--device="):
                device = arg[len("--device="):]
            elif arg.startswith("-d") and len(arg) > 2:
                device = arg[2:]
            elif arg in QUERIES:
                command = arg
            else:
                return None
        elif arg == "--json":
            as_json = True
        else:
            return None
    return None if command is None else (device, command, as_json)


# ---- helpers shared with wdt_commands -------------------------------------------------------

def sys_root() -> str:
    return os.environ.get("HAMTOOLS_SYSFS", "/sys")


def resolve_device(device: str | None) -> str:
    if device:
        return device
    found = watchdog_probe.default_device()
    if found is None:
        raise AppletError("no watchdog device: neither /dev/watchdog0 nor /dev/watchdog exists "
                          "(is a driver loaded?)", EXIT_NOT_RUNNING)
    return found


def open_error(what: str, device: str, err: OSError) -> AppletError:
    code = EXIT_NOT_RUNNING if isinstance(err, FileNotFoundError) else EXIT_FALSE
    return AppletError(f"{what}: {device}: {watchdog.describe_error(err)}", code)


def whole_number(text: str) -> int | None:
    """text as a non-negative int if it is ASCII digits only (int() also takes "+5", " 5",
    "5_0" and other scripts' digits), else None."""
    return int(text) if text.isascii() and text.isdigit() else None


def parse_seconds(text: str, what: str, minimum: int) -> int:
    """A command's N: whole seconds from minimum up to what the kernel takes, else the
    one-line usage error that names the range (nothing has been opened yet)."""
    value = whole_number(text)
    if value is None or not minimum <= value <= watchdog.MAX_TIMEOUT:
        raise AppletError(f"{what}: invalid value '{text}': expected whole seconds, "
                          f"{minimum}..{watchdog.MAX_TIMEOUT}", EXIT_USAGE)
    return value


def probe(what: str, device: str | None, wanted) -> watchdog_probe.Snapshot:
    device = resolve_device(device)
    try:
        return watchdog_probe.probe(device, wanted, sys_root())
    except OSError as err:
        raise open_error(what, device, err) from None


def print_json(value) -> None:
    import json  # only --json pays for it

    print(json.dumps(value, indent=2))


# ---- info -----------------------------------------------------------------------------------

def info(device: str | None, as_json: bool) -> int:
    snap = probe("info", device, watchdog_probe.INFO_FIELDS)
    missing = snap.missing(watchdog_probe.INFO_FIELDS)
    if missing and snap.not_opened:
        names = ", ".join("flags" if m == "options" else m.replace("_", " ") for m in missing)
        sys.stderr.write(f"wdt: info: {names} unknown: sysfs lacks them and {snap.device} "
                         f"was not opened: {snap.not_opened}\n")
    if as_json:
        print_json(info_json(snap))
    else:
        sys.stdout.write(info_text(snap))
    return EXIT_OK


def _seconds(label: str, value: int) -> str:
    # wdctl's "%-14s %2i seconds" (singular for 1)
    return f"{label:<14} {value:2d} second{'' if value == 1 else 's'}\n"


def info_text(snap: watchdog_probe.Snapshot) -> str:
    """The same lines as util-linux wdctl (2.38), flag table included."""
    identity = snap.identity or "unknown"
    if snap.firmware_version is not None:
        identity += f" [version {snap.firmware_version:x}]"
    out = [f"{'Device:':<15}{snap.device}\n", f"{'Identity:':<15}{identity}\n"]
    for label, value in (("Timeout:", snap.timeout), ("Timeleft:", snap.timeleft),
                         ("Pre-timeout:", snap.pretimeout)):
        if value is not None:
            out.append(_seconds(label, value))
    if snap.governor:
        out.append(f"{'Pre-timeout governor:':<14} {snap.governor}\n")
    if snap.governors:
        out.append(f"{'Available pre-timeout governors:':<14} {' '.join(snap.governors)}\n")
    rows = flag_rows(snap)
    if rows:
        flag_width = max(14, *(len(r[0]) for r in rows))
        desc_width = max(len("DESCRIPTION"), *(len(r[1]) for r in rows))
        for flag, desc, now, boot in [("FLAG", "DESCRIPTION", "STATUS", "BOOT-STATUS"), *rows]:
            out.append(f"{flag:<{flag_width}} {desc:<{desc_width}} {now:>6} {boot:>11}\n")
    return "".join(out)


def flag_rows(snap: watchdog_probe.Snapshot) -> list[tuple[str, str, str, str]]:
    bits = snap.flag_bits()
    if not bits:
        return []
    status, boot = snap.status or 0, snap.bootstatus or 0
    return [(name, desc, "1" if status & bit else "0", "1" if boot & bit else "0")
            for name, bit, desc in watchdog.FLAGS if bits & bit]


def info_json(snap: watchdog_probe.Snapshot) -> dict:
    rows = flag_rows(snap) if snap.options is not None else None
    return {
        "device": snap.device, "sysfs": snap.sysfs_dir, "identity": snap.identity,
        "firmware_version": snap.firmware_version, "timeout": snap.timeout,
        "pretimeout": snap.pretimeout, "timeleft": snap.timeleft,
        "min_timeout": snap.min_timeout, "max_timeout": snap.max_timeout,
        "pretimeout_governor": snap.governor, "available_governors": snap.governors,
        "nowayout": None if snap.nowayout is None else bool(snap.nowayout), "state": snap.state,
        "options": snap.options, "status": snap.status, "bootstatus": snap.bootstatus,
        "flags": None if rows is None else [
            {"flag": f, "description": d, "status": s == "1", "boot_status": b == "1"}
            for f, d, s, b in rows],
        "opened": snap.opened, "not_opened": snap.not_opened,
    }


# ---- list, timeleft, bootstatus -------------------------------------------------------------

def list_devices(device: str | None, as_json: bool) -> int:
    """Every registered watchdog, from sysfs alone (-d is not used: it lists them all)."""
    rows = []
    for name, directory in watchdog_sysfs.list_devices(sys_root()):
        attrs = watchdog_sysfs.read_attributes(directory)
        rows.append({"device": f"/dev/{name}", "identity": attrs.get("identity"),
                     "state": attrs.get("state"), "timeout": attrs.get("timeout"),
                     "timeleft": attrs.get("timeleft"), "nowayout": attrs.get("nowayout")})
    if as_json:
        print_json(rows)
    elif rows:
        ident_width = max(len("IDENTITY"), *(len(r["identity"] or "-") for r in rows))
        lines = [("DEVICE", "IDENTITY", "STATE", "TIMEOUT", "TIMELEFT", "NOWAYOUT")]
        lines += [tuple("-" if r[k] is None else str(r[k]) for k in r) for r in rows]
        for dev, ident, state, timeout, left, nowayout in lines:
            print(f"{dev:<15} {ident:<{ident_width}} {state:<8} {timeout:>7} {left:>8} {nowayout:>8}")
    if not rows:
        raise AppletError(f"list: no watchdog in {watchdog_sysfs.class_dir(sys_root())}",
                          EXIT_NOT_RUNNING)
    return EXIT_OK


def timeleft(device: str | None, as_json: bool) -> int:
    snap = probe("timeleft", device, ("timeleft", "identity"))
    if snap.timeleft is None:
        if "timeleft" in snap.unsupported:
            raise AppletError(f"timeleft: not supported by {snap.identity or snap.device}")
        raise AppletError(f"timeleft: unknown: {snap.device} was not opened: {snap.not_opened}")
    if as_json:
        print_json({"device": snap.device, "timeleft": snap.timeleft})
    else:
        print(snap.timeleft)
    return EXIT_OK


def bootstatus(device: str | None, as_json: bool) -> int:
    """Exit 0 when the watchdog caused the last reset, 1 when it did not."""
    snap = probe("bootstatus", device, ("bootstatus",))
    bits = snap.bootstatus
    if bits is None:
        raise AppletError(f"bootstatus: unknown: {snap.device} was not opened: {snap.not_opened}")
    by_watchdog = bool(bits & watchdog.RESET_CAUSES)
    names = watchdog.flag_names(bits)
    if as_json:
        print_json({"device": snap.device, "bootstatus": bits, "flags": names,
                    "watchdog_reset": by_watchdog})
    elif by_watchdog:
        descriptions = {name: desc for name, _, desc in watchdog.FLAGS}
        why = ", ".join(f"{n}: {descriptions[n]}" for n in names if n in descriptions)
        print(f"{snap.device}: the last reset came from the watchdog ({why})")
    else:
        extra = f" (boot status {' '.join(names)})" if names else ""
        print(f"{snap.device}: the last reset did not come from the watchdog{extra}")
    return EXIT_OK if by_watchdog else EXIT_FALSE


QUERY_COMMANDS = {"info": info, "list": list_devices, "timeleft": timeleft,
                  "bootstatus": bootstatus}
