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
    "-verbose (decrease), =verbose (print), -node NODE (local node only). Each command's "
    "--help names the QNX call it maps to.",
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
    """Every entity: type, pid, run state, QNX state, heartbeat, restarts.

    QNX: the /proc/ham tree's .info files, all at once."""
    data = _status()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"ham pid {data['ham_pid']}, guardian {data['guardian_pid'] or '-'}, "
          f"failures {data['ham_failures']}, verbosity {data['verbosity']}")
    dog = data.get("watchdog")
    if dog:
        feeding = "fed" if dog["feeding"] else f"NOT fed: killing {', '.join(dog['pending_kills'])}"
        print(f"watchdog {dog['device']} ({dog['identity']}), timeout {dog['timeout']} s, {feeding}")
        if dog["last_reset"]:
            last = dog["last_reset"]
            print(f"  the last boot ended in a watchdog reset, blamed on {last.get('culprit')} "
                  f"(pid {last.get('pid')}); the driver's boot status: "
                  f"{ {True: 'watchdog reset', False: 'no watchdog reset', None: 'not reported'}[last.get('bootstatus_says_watchdog')] }")
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
def stop(name: str = cli.typer.Argument(None, metavar="[ENTITY]", help="stop this entity; none: stop ham",
                                       autocompletion=lambda: _paths(1)),
         stop_entities: bool = cli.typer.Option(
             False, "--stop-entities", help="with no ENTITY: stop the monitored processes too")):
    """Stop ham, or one entity (its stop signal, then SIGKILL after its stop timeout).

    QNX: ham_stop(), hamctrl -stop. One entity: none in QNX (a hamtools service; it stays
    down until `hamctl start ENTITY`)."""
    if name:
        return _run(name, "stop")
    _call("ham_stop", stop_entities=stop_entities)
    return 0 if _wait_gone(10.0) else 1


def _run(name: str, command: str) -> int:
    result = _call("ham_service_control", name, command)
    print(f"{result['name']}: {result['run']}" + (f" (pid {result['pid']})" if result["pid"] else ""))
    return 0


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


VERBOSE_OPS = {"up": q.VERBOSE_SET_INCR, "down": q.VERBOSE_SET_DECR, "get": q.VERBOSE_GET, "set": q.VERBOSE_SET}


@app.command()
def verbose(operation: str = cli.typer.Argument(..., metavar="up|down|get|set",
                                                autocompletion=lambda: list(VERBOSE_OPS)),
            value: int = cli.typer.Argument(0, min=0, help="the level for `set`; the step for up/down")):
    """ham's verbosity: raise, lower, print or set it.

    QNX: ham_verbose() with VERBOSE_SET_INCR, _DECR, VERBOSE_GET, VERBOSE_SET; hamctrl
    +verbose, -verbose, =verbose."""
    if operation not in VERBOSE_OPS:
        raise AppletError(f"verbose {operation}: use up, down, get or set", EXIT_USAGE)
    _call("ham_verbose", None, VERBOSE_OPS[operation], value)
    print(_call("ham_verbose", None, q.VERBOSE_GET, 0))
    return 0


@app.command("start", context_settings={"ignore_unknown_options": True})
def start_ham(args: list[str] = cli.typer.Argument(None, metavar="[ENTITY | HAM ARGS...]",
                                                   autocompletion=lambda: _paths(1))):
    """Start one entity by name, or (no argument, or options) start ham in the background
    unless it is running, passing the arguments to ham.

    QNX: none (QNX starts ham by running it; one entity: a hamtools service, wanted up
    again)."""
    import subprocess

    if args and not args[0].startswith("-"):
        if len(args) > 1:
            raise AppletError("start ENTITY takes one name", EXIT_USAGE)
        return _run(args[0], "start")
    try:
        _call("ham_verbose", None, q.VERBOSE_GET, 0)
        print("hamctl: ham is already running")
        return 0
    except AppletError as err:
        if err.code != EXIT_NOT_RUNNING:
            raise
    zipapp = os.path.realpath(sys.argv[0])
    me = [sys.executable, zipapp] if _is_zip(zipapp) else [sys.executable, "-m", "hamtools"]
    return subprocess.run([*me, "ham", *(args or [])]).returncode


@app.command()
def restart(name: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1))):
    """Restart one entity: its stop signal, SIGKILL after its stop timeout, then start.

    QNX: none (QNX restarts only through a death condition's restart action)."""
    return _run(name, "restart")


@app.command("set")
def set_(name: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
         settings: list[str] = cli.typer.Argument(
             ..., metavar="KEY=VALUE...", help="TOML service keys, e.g. restart=on-failure max_restarts=10",
             autocompletion=lambda incomplete: _keys("SERVICE_KEYS", incomplete))):
    """Set restart policy and attributes of an entity ham started (the configuration's keys);
    they apply from its next death or start. A reload brings back what a file says.

    QNX: none (QNX has no restart policy; the libham extension is ham_service_set())."""
    values = _settings("set", settings)
    spec = _call("ham_service_set", name, **values)
    print(" ".join(f"{k}={spec[k]}" for k in values if k in spec))
    return 0


@app.command("set-group")
def set_group(name: str = cli.typer.Argument(..., metavar="GROUP"),
              settings: list[str] = cli.typer.Argument(
                  ..., metavar="KEY=VALUE...", help="TOML group keys: strategy=one_for_all window=30s",
                  autocompletion=lambda incomplete: _keys("GROUP_KEYS", incomplete))):
    """Set a service group's policy (the TOML [group.NAME] keys); it applies from the next
    failure of a member. A reload brings back what a file says of a group it mentions.

    QNX: none (the libham extension is ham_group_set())."""
    values = _settings("set-group", settings)
    group = _call("ham_group_set", name, **values)
    print(" ".join(f"{k}={group[k]}" for k in values if k in group))
    return 0


def _settings(command: str, items: list[str]) -> dict:
    """KEY=VALUE words: the value as text, or JSON when it starts a list or a table."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AppletError(f"{command}: {item!r} is not KEY=VALUE", EXIT_USAGE)
        try:
            values[key] = json.loads(value) if value[:1] in "[{" else value
        except ValueError:
            raise AppletError(f"{command}: {key}: {value!r} is not valid JSON", EXIT_USAGE) from None
    return values


@app.command()
def reload():
    """Apply ham's configuration files again (like SIGHUP); unchanged entities are not touched.

    QNX: none (QNX ham reads no files; the libham extension is ham_reload())."""
    result = _call("ham_reload")
    print(", ".join(f"{kind} {len(names)}" + (f" ({' '.join(names)})" if names and kind != "unchanged" else "")
                    for kind, names in result.items()))
    return 0


@app.command()
def reexec(zipapp: str = cli.typer.Argument(None, metavar="[ZIPAPP]",
                                            help="the new hamtools file (default: the one ham runs from)"),
           wait: float = cli.typer.Option(10.0, "--wait", metavar="SECS", help="how long to wait for the new ham")):
    """Replace the running ham with a new zipapp in place: same pid, every entity kept. ham
    tries the new code first and keeps running as it is when that cannot run ham. QNX: none
    (hamtools' ham_reexec())."""
    before = _status()
    pid = _call("ham_reexec", os.path.abspath(zipapp) if zipapp else None)["pid"]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.05)
        try:
            now = _status()
        except AppletError:
            continue  # between the exec and the new ham's sockets
        if now.get("reexec_failure"):
            raise AppletError(f"reexec refused: {now['reexec_failure']}")
        if now["ham_pid"] == pid and now["started"] != before["started"]:
            print(f"ham re-executed (pid {pid}, {len(now['entities']) - 1} entities)")
            return 0
    raise AppletError(f"reexec: no new ham answered within {wait:g} s")


# ---- the API from a shell -----------------------------------------------------------------

CONDITION_TYPES = {name[4:].lower(): value for value, name in q.CONDITION_NAMES.items()}


def _flags(names: list[str], table: dict[int, str]) -> int:
    known = {name.upper(): bit for bit, name in table.items()}
    value = 0
    for name in names or []:
        key = name.upper() if name.upper().startswith("H") else "H" + name.upper()
        if key not in known:
            raise AppletError(f"unknown flag {name!r}: use {', '.join(sorted(known))}", EXIT_USAGE)
        value |= known[key]
    return value


@app.command()
def attach(name: str = cli.typer.Argument(..., metavar="NAME"),
           pid: int = cli.typer.Option(0, "--pid", help="watch this running process"),
           command: list[str] = cli.typer.Argument(None, metavar="[-- COMMAND ARGS...]"),
           flag: list[str] = cli.typer.Option([], "--flag", help="HENTITYKEEPONDEATH",
                                              autocompletion=lambda: list(q.ENTITY_FLAG_NAMES.values()))):
    """Watch a running process (--pid) or start COMMAND and watch it.

    QNX: ham_attach() (pid -1 and a line: start it; a pid: watch that process)."""
    import shlex

    if (pid > 0) == bool(command):
        raise AppletError("attach: give either --pid PID or -- COMMAND ARGS...", EXIT_USAGE)
    _call("ham_attach", name, 0, pid or -1, shlex.join(command) if command else None,
          _flags(flag, q.ENTITY_FLAG_NAMES))
    print(f"{name}: pid {_entity(name)['pid']}")
    return 0


@app.command()
def detach(name: str = cli.typer.Argument(..., metavar="NAME", autocompletion=lambda: _paths(1))):
    """Stop watching an entity: CONDDETACH fires; the process runs on.

    QNX: ham_detach_name()."""
    _call("ham_detach_name", 0, name, 0)
    return 0


@app.command()
def condition(entity: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
              name: str = cli.typer.Argument(..., metavar="NAME"),
              ctype: str = cli.typer.Argument(..., metavar="TYPE", help="death, abnormaldeath, detach, restart, "
                                              "hbeatmissedlow, hbeatmissedhigh, attach, state, raise, any "
                                              "(QNX names work too)", autocompletion=lambda: list(CONDITION_TYPES)),
              flag: list[str] = cli.typer.Option([], "--flag", help="QNX condition flags, e.g. HREARMAFTERRESTART; "
                                                 "state: HCONDSTATEFROMSET, HCONDSTATETOSET, ...INV",
                                                 autocompletion=lambda: list(q.CONDITION_FLAG_NAMES.values())),
              from_: str = cli.typer.Option(None, "--from", metavar="N", help="state: the state it leaves "
                                            "(0: any; with HCONDSTATEFROMSET a bitmask, 0x.. works)"),
              to: str = cli.typer.Option(None, "--to", metavar="N", help="state: the state it enters (as --from)"),
              rtype: str = cli.typer.Option(None, "--type", metavar="N", help="raise: the type (0: any)"),
              rclass: str = cli.typer.Option(None, "--class", metavar="N", help="raise: the class (0: any)"),
              severity: str = cli.typer.Option(None, "--severity", metavar="N", help="raise: the severity (0: any)")):
    """Add a condition to an entity.

    QNX: ham_condition(); TYPE state: ham_condition_state(); TYPE raise: ham_condition_raise()."""
    key = ctype.lower().removeprefix("cond")
    if key not in CONDITION_TYPES:
        raise AppletError(f"condition type {ctype!r}: use {', '.join(CONDITION_TYPES)}", EXIT_USAGE)
    flags = _flags(flag, q.CONDITION_FLAG_NAMES)
    given = {"--from": from_, "--to": to, "--type": rtype, "--class": rclass, "--severity": severity}
    takes = {"state": ("--from", "--to"), "raise": ("--type", "--class", "--severity")}.get(key, ())
    stray = [option for option, value in given.items() if value is not None and option not in takes]
    if stray:
        raise AppletError(f"condition {key}: {', '.join(stray)} belong to "
                          + ("state (--from, --to)" if stray[0] in ("--from", "--to")
                             else "raise (--type, --class, --severity)"), EXIT_USAGE)
    values = [_number(option, given[option]) for option in takes]
    if key == "state":
        _call("ham_condition_state", _handle(entity), name, *values, flags)
    elif key == "raise":
        _call("ham_condition_raise", _handle(entity), name, *values, flags)
    else:
        _call("ham_condition", _handle(entity), CONDITION_TYPES[key], name, flags)
    return 0


def _number(option: str, text: str | None) -> int:
    """An option's number: decimal, or 0x.. / 0b.. (state bitmasks); absent: 0 (any)."""
    try:
        value = 0 if text is None else int(text, 0)
    except ValueError:
        raise AppletError(f"{option} {text!r}: not a number", EXIT_USAGE) from None
    if value < 0:
        raise AppletError(f"{option} {text!r}: must not be negative", EXIT_USAGE)
    return value


ACTION_USAGE = ("restart LINE | execute LINE [TIMEOUT] | waitfor MS [PATH] | notify_pulse PID CHID CODE VALUE | "
                "notify_signal PID SIGNUM CODE VALUE | heartbeat_healthy | log MESSAGE [VERBOSITY]")
ACTION_KINDS = tuple(form.split()[0] for form in ACTION_USAGE.split(" | "))
FAIL_KINDS = tuple(kind for kind in ACTION_KINDS if kind not in ("restart", "heartbeat_healthy"))


def _action_call(kind: str, args: list[str], fail: bool):
    """(libham function name, its arguments after the handle and name) for KIND ARGS."""
    try:
        numbers = [int(a) for a in args] if kind in ("notify_pulse", "notify_signal") else None
        if kind == "restart" and len(args) == 1 and not fail:
            return "restart", [args[0]]
        if kind == "execute" and len(args) in (1, 2):
            return "execute", [args[0]], {"timeout": float(args[1])} if len(args) == 2 else {}
        if kind == "waitfor" and len(args) in (1, 2):
            return "waitfor", [args[1] if len(args) == 2 else None, int(args[0])]
        if kind == "notify_pulse" and len(args) == 4:
            return "notify_pulse", [0, numbers[0], numbers[1], numbers[2], numbers[3]]
        if kind == "notify_signal" and len(args) == 4:
            return "notify_signal", [0, numbers[0], numbers[1], numbers[2], numbers[3]]
        if kind == "heartbeat_healthy" and not args and not fail:
            return "heartbeat_healthy", []
        if kind == "log" and len(args) in (1, 2):
            return "log", [args[0], 1, int(args[1]) if len(args) == 2 else 0]
    except ValueError:
        pass
    raise AppletError(f"{kind} {' '.join(args)}: use {ACTION_USAGE}"
                      + (" (no restart or heartbeat_healthy in a fail list)" if fail else ""), EXIT_USAGE)


def _split_action(found):
    kind, positional = found[0], found[1]
    return kind, positional, (found[2] if len(found) > 2 else {})


@app.command(context_settings={"ignore_unknown_options": True})
def action(entity: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
           cond: str = cli.typer.Argument(..., metavar="CONDITION", autocompletion=lambda ctx: _below(ctx, "entity")),
           name: str = cli.typer.Argument(..., metavar="NAME"),
           kind: str = cli.typer.Argument(..., metavar="KIND", autocompletion=lambda: list(ACTION_KINDS)),
           args: list[str] = cli.typer.Argument(None, metavar="ARGS..."),
           flag: list[str] = cli.typer.Option([], "--flag", help="QNX action flags, e.g. HACTIONKEEPONFAIL",
                                              autocompletion=lambda: list(q.ACTION_FLAG_NAMES.values()))):
    """Add an action to a condition.

    QNX: ham_action_restart(), ham_action_execute(), ham_action_waitfor(),
    ham_action_notify_pulse(), ham_action_notify_signal(), ham_action_heartbeat_healthy(),
    ham_action_log() (KIND names which)."""
    kind, positional, extra = _split_action(_action_call(kind, args or [], fail=False))
    _call(f"ham_action_{kind}", _handle(f"{entity}/{cond}"), name, *positional,
          _flags(flag, q.ACTION_FLAG_NAMES), **extra)
    return 0


@app.command(context_settings={"ignore_unknown_options": True})
def fail(entity: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
         cond: str = cli.typer.Argument(..., metavar="CONDITION", autocompletion=lambda ctx: _below(ctx, "entity")),
         act: str = cli.typer.Argument(..., metavar="ACTION",
                                       autocompletion=lambda ctx: _below(ctx, "entity", "cond")),
         name: str = cli.typer.Argument(..., metavar="NAME"),
         kind: str = cli.typer.Argument(..., metavar="KIND", autocompletion=lambda: list(FAIL_KINDS)),
         args: list[str] = cli.typer.Argument(None, metavar="ARGS...")):
    """Add to an action's fail list.

    QNX: ham_action_fail_execute(), ham_action_fail_waitfor(), ham_action_fail_notify_pulse(),
    ham_action_fail_notify_signal(), ham_action_fail_log() (KIND names which)."""
    kind, positional, extra = _split_action(_action_call(kind, args or [], fail=True))
    _call(f"ham_action_fail_{kind}", _handle(f"{entity}/{cond}/{act}"), name, *positional, 0, **extra)
    return 0


def _control(path: str, command: int, recursive: bool) -> int:
    depth = len([p for p in path.strip("/").split("/") if p])
    function = {1: "ham_entity_control", 2: "ham_condition_control", 3: "ham_action_control"}.get(depth)
    if function is None:
        raise AppletError(f"{path}: give entity, entity/condition or entity/condition/action", EXIT_USAGE)
    _call(function, _handle(path), command, q.HRECURSE if recursive else 0)
    return 0


@app.command()
def enable(path: str = cli.typer.Argument(..., metavar="PATH", autocompletion=lambda: _paths(3)),
           recursive: bool = cli.typer.Option(False, "--recursive", "-r", help="HRECURSE")):
    """Enable an entity, condition or action.

    QNX: ham_entity_control(), ham_condition_control(), ham_action_control() with HENABLE
    (--recursive: HRECURSE)."""
    return _control(path, q.HENABLE, recursive)


@app.command()
def disable(path: str = cli.typer.Argument(..., metavar="PATH", autocompletion=lambda: _paths(3)),
            recursive: bool = cli.typer.Option(False, "--recursive", "-r", help="HRECURSE")):
    """Disable an entity, condition or action: its events are ignored.

    QNX: ham_entity_control(), ham_condition_control(), ham_action_control() with HDISABLE
    (--recursive: HRECURSE)."""
    return _control(path, q.HDISABLE, recursive)


@app.command()
def remove(path: str = cli.typer.Argument(..., metavar="PATH", autocompletion=lambda: _paths(4))):
    """Remove an entity from monitoring (a placeholder goes; a process runs on, as after
    detach), a condition, an action, or an action-fail item.

    QNX: ham_condition_remove(), ham_action_remove(), ham_action_fail_remove(); an entity:
    ham_detach() in QNX (here the extension ham_entity_remove(), which also removes a
    placeholder)."""
    depth = len([p for p in path.strip("/").split("/") if p])
    if depth == 1:
        _call("ham_entity_remove", _handle(path), 0)
    elif depth == 2:
        _call("ham_condition_remove", _handle(path), 0)
    elif depth == 3:
        _call("ham_action_remove", _handle(path), 0)
    elif depth == 4:
        head, item = path.strip("/").rsplit("/", 1)
        _call("ham_action_fail_remove", _handle(head), item, 0)
    else:
        raise AppletError(f"{path}: give entity[/condition[/action[/fail]]]", EXIT_USAGE)
    return 0


@app.command()
def state(entity: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
          value: int = cli.typer.Argument(..., metavar="N", min=0)):
    """Publish the entity's new state: its CONDSTATE conditions fire.

    QNX: ham_entity_condition_state()."""
    _call("ham_entity_condition_state", _handle(entity), value, 0)
    return 0


@app.command("raise")
def raise_(entity: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
           rtype: int = cli.typer.Argument(..., metavar="TYPE", min=0),
           rclass: int = cli.typer.Argument(..., metavar="CLASS", min=0),
           severity: int = cli.typer.Argument(..., metavar="SEV", min=0)):
    """Raise a condition on the entity: its CONDRAISE conditions that match fire.

    QNX: ham_entity_condition_raise()."""
    _call("ham_entity_condition_raise", _handle(entity), rtype, rclass, severity, 0)
    return 0


def _handle(path: str):
    from hamtools.ham import Handle

    return Handle(path.strip("/"))


def _entity(name: str) -> dict | None:
    return next((e for e in _status()["entities"] if e["name"] == name), None)


@app.command()
def lookup(name: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1)),
           wait: float = cli.typer.Option(0.0, "--wait", metavar="SECS",
                                          help="wait this long for it to be running (across a restart)")):
    """Print the entity's current pid (seed 001's lookup service); with --wait, wait for it.

    QNX: none (a QNX client reads /proc/ham/ENTITY/.info's Entity Pid)."""
    deadline = time.monotonic() + wait
    while True:
        entity = _entity(name)
        if entity is not None and entity["run"] == "running" and entity["pid"]:
            print(entity["pid"])
            return 0
        if time.monotonic() >= deadline:
            raise AppletError(f"{name}: " + ("no such entity" if entity is None else f"not running ({entity['run']})"),
                              EXIT_NOT_RUNNING)
        time.sleep(0.05)  # a client's pace; ham itself never polls


@app.command()
def check(name: str = cli.typer.Argument(..., metavar="ENTITY", autocompletion=lambda: _paths(1))):
    """Exit 0 if the entity is healthy (running; heartbeat healthy if it has one; ready if it
    reports readiness), 1 if not, 3 if ham is not running or there is no such entity: for
    Kubernetes exec probes, keepalived track scripts and the OCF agent (scripts/ocf/ham).

    QNX: none (a QNX client reads /proc/ham/ENTITY/.info)."""
    entity = _entity(name)
    if entity is None:
        raise AppletError(f"{name}: no such entity", EXIT_NOT_RUNNING)
    problems = []
    if entity["run"] != "running" or not entity["pid"]:
        problems.append(f"not running ({entity['run']})")
    if entity["heartbeat_state"] not in (None, "healthy"):
        problems.append(f"heartbeat {entity['heartbeat_state']}")
    if entity.get("ready") is False and not problems:
        problems.append("not ready")
    if not entity["enabled"]:
        problems.append("disabled")
    if problems:
        print(f"{name}: unhealthy: {', '.join(problems)}")
        return 1
    print(f"{name}: healthy (pid {entity['pid']})")
    return 0


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
def ls(path: str = cli.typer.Argument("/", metavar="[PATH]", help="entity, entity/condition, or /",
                                      autocompletion=lambda: _paths(2))):
    """List the /proc/ham tree: entities are directories, conditions subdirectories, actions files.

    QNX: ls /proc/ham/PATH."""
    parts, _, kids = _find(_status(), path)
    print(".info")
    for kid in kids:
        print(kid["name"] + ("" if len(parts) == 2 else "/"))
    return 0


@app.command()
def info(path: str = cli.typer.Argument("/", metavar="[PATH]",
                                        help="/, entity, entity/condition or entity/condition/action",
                                        autocompletion=lambda: _paths(3))):
    """The .info fields of a /proc/ham node, in QNX's layout.

    QNX: cat /proc/ham/PATH/.info."""
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
                ("Ham Failures", data["ham_failures"]), ("Guardian Failures", data.get("guardian_failures", 0)),
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
    """ham's event journal: time, entity, condition, what happened, cumulative counts.

    QNX: none (seed 002's journal; QNX ham has only its log)."""
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


# ---- what shell completion offers (hamtools.completion asks through the typer tree) ---------

def _paths(depth: int) -> list[str]:
    """The running ham's tree as paths, entity[/condition[/action[/fail]]] down to depth
    levels; nothing when no ham answers."""
    try:
        entities = _status()["entities"]
    except AppletError:
        return []
    paths = []
    for e in entities:
        paths.append(e["name"])
        for c in e["conditions"] if depth > 1 else ():
            paths.append(f"{e['name']}/{c['name']}")
            for a in c["actions"] if depth > 2 else ():
                paths.append(f"{e['name']}/{c['name']}/{a['name']}")
                paths.extend(f"{e['name']}/{c['name']}/{a['name']}/{f['name']}"
                             for f in (a["fails"] if depth > 3 else ()))
    return paths


def _below(ctx, *names: str) -> list[str]:
    """The names one level below the path that the arguments `names` already gave."""
    parent = "/".join(str(ctx.params.get(name)) for name in names) + "/"
    return [path[len(parent):] for path in _paths(len(names) + 1)
            if path.startswith(parent) and "/" not in path[len(parent):]]


def _keys(table: str, incomplete: str) -> list[tuple[str, str]]:
    """KEY= for each settable key of hamtools.hamd.service's table, with its meaning; once the
    key is typed, the values of a key that has a fixed few."""
    from hamtools.hamd import service

    keys = {k: v for k, v in getattr(service, table).items() if k not in ("name", "condition")}
    key, typed, _ = incomplete.partition("=")
    if typed and key in keys and "|" in keys[key][0]:
        return [f"{key}={value}" for value in keys[key][0].split("|")]
    return [(f"{k}=", meaning) for k, (_, _, meaning) in keys.items()]


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
