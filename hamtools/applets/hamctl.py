"""`hamctl`: drive a running ham (QNX hamctrl's options, and the API from a shell)."""

import errno
import json
import os
import sys
import time

from hamtools.core import cli, runtime
from hamtools.core.errors import EXIT_NOT_RUNNING, EXIT_USAGE, AppletError
from hamtools.core import hamconsts as q

app = cli.make_app(
    "Drive a running ham. QNX hamctrl's options work too: -stop, +verbose (increase), "
    "-verbose (decrease), =verbose (print), -node NODE (local node only).",
    epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 ham not running or no such object.",
)
ENTITY_TYPES = {"attached": "ATTACHED", "self": "ATTACHEDSELF", "placeholder": "UNATTACHED",
                "global": "GLOBAL"}


def _call(function, *args, **kwargs):
    """A libham call; its OSError becomes hamctl's one-line error with the right exit code."""
    import hamtools.ham as ham

    try:
        return getattr(ham, function)(*args, **kwargs)
    except OSError as err:
        code = EXIT_NOT_RUNNING if err.errno in (errno.EBADF, errno.ENOENT) else 1
        raise AppletError(err.strerror or os.strerror(err.errno), code) from None


def _status() -> dict:
    return _call("ham_status")


# ---- ham itself -------------------------------------------------------------------------

@app.command()
def status(as_json: bool = cli.typer.Option(False, "--json", help="one JSON object (SPEC §10)")):
    """Every entity: type, pid, run state, QNX state, heartbeat, restarts."""
    data = _status()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"ham pid {data['ham_pid']}, guardian {data['guardian_pid'] or '-'}, "
          f"failures {data['ham_failures']}, verbosity {data['verbosity']}")
    rows = [("NAME", "TYPE", "PID", "RUN", "STATE", "HEARTBEAT", "RESTARTS", "CONDITIONS")]
    for e in data["entities"]:
        rows.append((e["name"], e["type"], str(e["pid"] or "-"), e["run"] + ("" if e["enabled"] else ",disabled"),
                     str(e["state"]), e["heartbeat_state"] or "-", str(e["restarts"]),
                     ",".join(c["name"] for c in e["conditions"]) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


@app.command()
def stop(stop_entities: bool = cli.typer.Option(
        False, "--stop-entities", help="stop the monitored processes too (default: they run on)")):
    """Stop ham (QNX ham_stop / hamctrl -stop)."""
    _call("ham_stop", stop_entities=stop_entities)
    return 0 if _wait_gone(10.0) else 1


def _wait_gone(seconds: float) -> bool:
    """Until ham has exited (its lock is free), so `hamctl stop && ham` never races it."""
    import fcntl

    try:
        fd = os.open(os.path.join(runtime.runtime_dir(), "ham.lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                time.sleep(0.02)
        sys.stderr.write("hamctl: stop: ham is still running\n")
        return False
    finally:
        os.close(fd)


@app.command()
def verbose(operation: str = cli.typer.Argument(..., metavar="up|down|get|set"),
            value: int = cli.typer.Argument(0, min=0, help="the level for `set`; the step for up/down")):
    """ham's verbosity (QNX ham_verbose)."""
    ops = {"up": q.VERBOSE_SET_INCR, "down": q.VERBOSE_SET_DECR, "get": q.VERBOSE_GET, "set": q.VERBOSE_SET}
    if operation not in ops:
        raise AppletError(f"verbose {operation}: use up, down, get or set", EXIT_USAGE)
    _call("ham_verbose", None, ops[operation], value)
    print(_call("ham_verbose", None, q.VERBOSE_GET, 0))
    return 0


@app.command("start")
def start_ham(ham_args: list[str] = cli.typer.Argument(None, metavar="[HAM ARGS]...")):
    """Start ham in the background unless it is running (arguments go to ham)."""
    import subprocess

    try:
        _call("ham_verbose", None, q.VERBOSE_GET, 0)
        print("hamctl: ham is already running")
        return 0
    except AppletError as err:
        if err.code != EXIT_NOT_RUNNING:
            raise
    zipapp = os.path.realpath(sys.argv[0])
    me = [sys.executable, zipapp] if _is_zip(zipapp) else [sys.executable, "-m", "hamtools"]
    return subprocess.run([*me, "ham", *(ham_args or [])]).returncode


def _is_zip(path: str) -> bool:
    import zipfile

    return os.path.isfile(path) and zipfile.is_zipfile(path)


# ---- the /proc/ham view -----------------------------------------------------------------

def _find(data: dict, path: str):
    parts = [p for p in path.strip("/").split("/") if p]
    node, kids = data, data["entities"]
    for depth, name in enumerate(parts):
        node = next((k for k in kids if k["name"] == name), None)
        if node is None or depth > 2:
            raise AppletError(f"{path}: no such entity, condition or action", EXIT_NOT_RUNNING)
        kids = node.get("conditions") or node.get("actions") or []
    return parts, node, kids


@app.command("ls")
def ls(path: str = cli.typer.Argument("/", help="entity, entity/condition, or /")):
    """List the /proc/ham tree: entities are directories, conditions subdirectories, actions files."""
    parts, _, kids = _find(_status(), path)
    print(".info")
    for kid in kids:
        print(kid["name"] + ("" if len(parts) == 2 else "/"))
    return 0


@app.command()
def info(path: str = cli.typer.Argument("/", help="/, entity, entity/condition or entity/condition/action")):
    """The .info fields of a /proc/ham node (QNX's layout)."""
    data = _status()
    parts, node, kids = _find(data, path)
    entity = next((e for e in data["entities"] if parts and e["name"] == parts[0]), None)
    for label, value in _info_fields(data, parts, node, entity):
        print(f"{label:<18}: {value}")
    return 0


def _when(stamp) -> str:
    if not stamp:
        return "Never"
    return time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(stamp)) + f":{int(stamp % 1 * 1e9)}"


def _info_fields(data, parts, node, entity):
    if not parts:
        conds = [c for e in data["entities"] for c in e["conditions"]]
        return [("Ham Pid", data["ham_pid"]), ("Guardian Pid", data["guardian_pid"] or "none"),
                ("Ham Failures", data["ham_failures"]), ("Guardian Failures", 0),
                ("Num Entities", len(data["entities"])), ("Num Conditions", len(conds)),
                ("Num Actions", sum(len(c["actions"]) for c in conds)),
                ("Ham Start Time", _when(data["started"])), ("Current Verbosity", data["verbosity"])]
    pid = entity["pid"] if entity["pid"] is not None else "none"
    if len(parts) == 1:
        fields = [("Path", node["name"]), ("Entity Pid", pid), ("Num conditions", len(node["conditions"])),
                  ("Entity type", ENTITY_TYPES[node["type"]]), ("Run state", node["run"]),
                  ("Created", _when(node["created"])), ("Last Death", _when(node["last_death"])),
                  ("Restarted", _when(node["restarted"])), ("Num Restarts", node["restarts"])]
        if node["heartbeat"]:
            hb = node["heartbeat"]
            fields += [("HeartBeat Period", f"{hb['period']:.9f}s"), ("HB Low Mark", hb["hpdl"]),
                       ("HB High Mark", hb["hpdh"]), ("HeartBeat State", node["heartbeat_state"].upper())]
        return fields
    if len(parts) == 2:
        flags = node["flags"]
        return [("Path", "/".join(parts)), ("Entity Pid", pid), ("Num Actions", len(node["actions"])),
                ("Condition ReArm", "ON" if "HREARMAFTERRESTART" in flags else "OFF"),
                ("Condition type", node["type"]), ("Flags", " ".join(flags) or "none"),
                ("Enabled", "yes" if node["enabled"] else "no"), ("Fired", node["fired"])]
    flags, params = node["flags"], node["params"]
    detail = {"restart": ("Restart Line", params.get("line")), "execute": ("Execute Line", params.get("line")),
              "waitfor": ("Waitfor", f"{params.get('path') or ''} {params.get('delay')} ms".strip()),
              "notify_pulse": ("Pulse", f"code {params.get('code')} value {params.get('value')} to pid "
                                        f"{params.get('pid')} chid {params.get('chid')}"),
              "notify_signal": ("Signal", f"{params.get('signum')} code {params.get('code')} value "
                                          f"{params.get('value')} to pid {params.get('pid')}"),
              "heartbeat_healthy": ("Heartbeat", "Reset heartbeat state to healthy"),
              "log": ("Log Message", f"{params.get('message')} (verbosity {params.get('verbosity')})")}
    fields = [("Path", "/".join(parts)), ("Entity Pid", pid),
              ("Action ReArm", "ON" if "HREARMAFTERRESTART" in flags else "OFF"), detail[node["kind"]],
              ("Runs", node["runs"]), ("Failures", node["failures"])]
    if "HACTIONKEEPONFAIL" in flags:
        fields.append(("On failure", "Action will be kept on Failure"))
    if "HACTIONBREAKONFAIL" in flags:
        fields.append(("On failure", "Failed Action will break out of action list"))
    return fields + [("Fail action", f"{f['name']} ({f['kind']})") for f in node["fails"]]


# ---- the event journal ------------------------------------------------------------------

@app.command()
def events(follow: bool = cli.typer.Option(False, "--follow", "-f", help="keep printing new events"),
           as_json: bool = cli.typer.Option(False, "--json", help="the raw JSON lines")):
    """ham's event journal: time, entity, condition, what happened, cumulative counts."""
    path = os.path.join(runtime.runtime_dir(), "events.jsonl")
    if not os.path.exists(path):
        raise AppletError(f"no event journal at {path} (is ham running?)", EXIT_NOT_RUNNING)
    for older in (path + ".1", path):
        if os.path.exists(older):
            with open(older, encoding="utf-8", errors="replace") as journal:
                for line in journal:
                    _print_event(line, as_json)
    if follow:
        _follow(path, as_json)
    return 0


def _follow(path: str, as_json: bool) -> None:
    journal = open(path, encoding="utf-8", errors="replace")
    journal.seek(0, os.SEEK_END)
    inode = os.fstat(journal.fileno()).st_ino
    try:
        while True:
            line = journal.readline()
            if line:
                _print_event(line, as_json)
                continue
            time.sleep(0.2)  # a reader's pace; ham itself never polls
            try:
                if os.stat(path).st_ino != inode:  # rotated: go on in the new file
                    journal.close()
                    journal = open(path, encoding="utf-8", errors="replace")
                    inode = os.fstat(journal.fileno()).st_ino
            except FileNotFoundError:
                pass
    except KeyboardInterrupt:
        pass
    finally:
        journal.close()


def _print_event(line: str, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(line)
    else:
        try:
            event = json.loads(line)
        except ValueError:
            return
        rest = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "entity", "condition", "what"))
        where = "/".join(p for p in (event.get("entity"), event.get("condition")) if p)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(event.get('time', 0)))} "
              f"{where} {event.get('what')} {rest}".rstrip())
    sys.stdout.flush()


# ---- QNX hamctrl options ------------------------------------------------------------------

def _hamctrl(argv: list[str]) -> int:
    args = list(argv)
    if "-node" in args:
        at = args.index("-node")
        node = args[at + 1] if at + 1 < len(args) else None
        if node is None:
            raise AppletError("-node needs a node name", EXIT_USAGE)
        raise AppletError(f"-node {node}: {os.strerror(errno.EINVAL)} (only the local node)")
    for arg in args:
        if arg == "-stop":
            _call("ham_stop")
        elif arg in ("+verbose", "-verbose"):
            _call("ham_verbose", None, q.VERBOSE_SET_INCR if arg[0] == "+" else q.VERBOSE_SET_DECR, 1)
            print(f"Verbosity of HAM is now {_call('ham_verbose', None, q.VERBOSE_GET, 0)} on local node")
        elif arg == "=verbose":
            print(f"Verbosity of HAM is now {_call('ham_verbose', None, q.VERBOSE_GET, 0)} on local node")
        else:
            raise AppletError(f"usage: hamctl [-stop] [-node node] [+|-|=verbose] ({arg}?)", EXIT_USAGE)
    return 0


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-stop", "+verbose", "-verbose", "=verbose", "-node"):
        return _hamctrl(argv)
    return cli.run(app, "hamctl", argv)
