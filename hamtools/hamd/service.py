"""The service spec: one schema for every way a service is configured (seed 001's startup
file, TOML, and later hamctl and the Python API extension).

validate(raw, source) turns loosely typed input (text from a startup file, TOML values) into
the canonical spec the spawner and the daemon use: every key present, defaults filled, user
and group names resolved to numbers, signals to ints, durations to float seconds, QNX
condition and flag names to their values. Anything wrong raises ConfigError, whose text is
`FILE:LINE: message`. SERVICE_KEYS is the documented key list (the README's schema table).
Plain dicts and functions: the daemon imports this module, and its resident size is
budgeted (no dataclasses, no re).
"""

import grp
import math
import pwd
import resource
import signal

from hamtools.core import hamconsts as q
from hamtools.core import words
from hamtools.hamd import model


class ConfigError(ValueError):
    """A configuration problem at source ("FILE:LINE", or just "FILE")."""

    def __init__(self, source: str, message: str):
        super().__init__(f"{source}: {message}")
        self.source, self.message = source, message


# key -> (type, default, what it means). The type names a parser below, or lists the
# choices ("a|b|c"). Input keys are the spec's keys except `command` (split into argv) and
# `condition` (normalised into conditions).
SERVICE_KEYS = {
    "name": ("name", None, "entity name: no '/', under 256 bytes (startup file: the program's basename)"),
    "command": ("command", None, "command line, split by POSIX shell word rules (or give argv)"),
    "argv": ("list of text", None, "program and arguments (or give command)"),
    "env": ("table of text", {}, "extra environment variables"),
    "uid": ("user", None, "run as this user, name or number; default: ham's own"),
    "gid": ("unix group", None, "run as this group, name or number; default: the user's primary group"),
    "cwd": ("absolute path", None, "working directory"),
    "umask": ("octal", None, 'file creation mask, "022"'),
    "rlimits": ("rlimits", {}, 'resource limits, {nofile = [1024, 4096], core = "unlimited"}'),
    "nice": ("nice", None, "niceness, -20..19"),
    "sched": ("sched", None, '{policy = "other"|"batch"|"idle"|"fifo"|"rr", priority = N}'),
    "cpus": ("cpu list", None, 'CPU affinity, "0,2-3" or [0, 2, 3]'),
    "cgroup": ("cgroup files", None, 'cgroup v2 files to write, {"memory.max" = "64M"}'),
    "stdout": ("output", "inherit", "inherit, null, syslog or file:/abs/path (size-rotated)"),
    "stderr": ("output or stdout", "inherit", "as stdout, or stdout: the same destination"),
    "log_max_bytes": ("size", 1048576, "a file: output is rotated at this size"),
    "log_keep": ("count", 3, "rotated files kept: path.1 .. path.N"),
    "stop_signal": ("signal", int(signal.SIGTERM), "sent to stop the service"),
    "stop_timeout": ("seconds", 10.0, "SIGKILL this long after the stop signal"),
    "kill_signal": ("signal", int(signal.SIGABRT), "a hung worker (MISSEDHIGH) is killed with this"),
    "grace": ("seconds", 5.0, "SIGKILL this long after the kill signal"),
    "restart": ("always|on-failure|never", "always", "when a death is followed by a restart"),
    "max_restarts": ("count", 5, "restart intensity: at most this many restarts ..."),
    "restart_window": ("seconds", 60.0, "... within this many seconds, then on_limit"),
    "backoff_initial": ("seconds", 0.1, "first restart delay"),
    "backoff_max": ("seconds", 30.0, "longest restart delay"),
    "backoff_factor": ("number", 2.0, "each consecutive restart waits this much longer (>= 1)"),
    "reset_after": ("seconds", 60.0, "healthy uptime that resets backoff and intensity"),
    "on_limit": ("log|stop|escalate|reboot|exec", "log", "what happens when the intensity limit is hit"),
    "on_limit_command": ("command line", None, "the command for on_limit = exec"),
    "group": ("name", None, "the service group it belongs to"),
    "safe_after": ("seconds", 60.0, "a restart after a shorter life is in safe mode"),
    "safe_arg": ("text", None, "appended to argv in safe mode"),
    "heartbeat": ("seconds", 0.0, "heartbeat period; 0: no heartbeat"),
    "missed_low": ("count", 1, "missed beats that fire CONDHBEATMISSEDLOW"),
    "missed_high": ("count", 3, "missed beats that fire CONDHBEATMISSEDHIGH (the hung-worker kill)"),
    "after": ("names", [], "start after these services (and stop before them)"),
    "ready": ("readiness", "none", "none, notify (READY=1), path:/abs/path or delay:SECONDS"),
    "condition": ("QNX conditions", [], "full QNX condition/action trees (TOML only)"),
}
_SPEC_KEY = {"command": "argv", "condition": "conditions"}  # input key -> spec key

GROUP_KEYS = {
    "strategy": ("cascade|one_for_all|rest_for_one", "cascade",
                 "cascade: seed 001's rule; one_for_all, rest_for_one: OTP's"),
    "window": ("seconds", 60.0, "cascade: more than one failure within this many seconds restarts all"),
}

SCHED_POLICIES = ("other", "batch", "idle", "fifo", "rr")
RLIMIT_NAMES = tuple(n[7:].lower() for n in dir(resource) if n.startswith("RLIMIT_"))


# ---- value parsers: value -> canonical value, or ValueError(what is wrong) ------------------

def _kind(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a number", str: "text", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _text(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, not {_kind(value)}")
    return value


def _integer(value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            pass
    raise ValueError(f"must be an integer, not {value!r}")


def _count(value) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError(f"must not be negative (got {number})")
    return number


def _size(value) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError(f"must be at least 1 (got {number})")
    return number


def _number(value) -> float:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # OverflowError: an integer past a float's range
            number = math.nan
        if math.isfinite(number):
            return number
    raise ValueError(f"must be a number, not {value!r}")


_DURATION_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))


def _seconds(value) -> float:
    """A duration: a number of seconds, or text with a unit (500ms, 2s, 1m, 1h)."""
    scale, text = 1.0, value
    if isinstance(value, str):
        text = value.strip()
        for unit, factor in _DURATION_UNITS:
            if text.endswith(unit) and text[:-len(unit)].strip():
                scale, text = factor, text[:-len(unit)]
                break
    try:
        number = _number(text) * scale
    except ValueError:
        raise ValueError(f"bad duration {value!r} (seconds, or 500ms, 2s, 1m, 1h)") from None
    if number < 0:
        raise ValueError(f"must not be negative (got {value!r})")
    if not math.isfinite(number):  # "1e308h": a timer at infinity never fires
        raise ValueError(f"bad duration {value!r} (too long)")
    return number


def _signal(value) -> int:
    """A signal by name (SIGABRT, ABRT, any case) or number."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            found = signal.Signals.__members__.get(text if text.startswith("SIG") else "SIG" + text)
            number = None if found is None else int(found)
    if number is None or number not in signal.valid_signals():
        raise ValueError(f"unknown signal {value!r}")
    return number


def _name(value) -> str:
    try:
        return model.check_name(value, "a")
    except model.HamError:
        raise ValueError(f"bad name {value!r} (no '/', under 256 bytes)") from None


def _names(value) -> list[str]:
    """A list of names, or comma-separated text (a startup file's AFTER=a,b)."""
    items = _text(value).split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"must be a list of names, not {_kind(value)}")
    names: list[str] = []
    for item in items:
        name = _name(item.strip() if isinstance(item, str) else item)
        if name not in names:
            names.append(name)
    return names


def _command_line(value) -> str:
    _argv_of(value)
    return value


def _argv_of(value) -> list[str]:
    try:
        argv = words.split(_text(value))
    except ValueError as err:
        raise ValueError(f"bad quoting: {err}") from None
    if not argv:
        raise ValueError("empty command")
    return argv


def _argv(value) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of text")
    argv = [_text(word) for word in value]
    if not argv[0]:
        raise ValueError("the program is empty")
    return argv


def _env(value) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table, not {_kind(value)}")
    env = {}
    for key, text in value.items():
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"bad variable name {key!r}")
        if isinstance(text, int) and not isinstance(text, bool):
            text = str(text)
        if not isinstance(text, str) or "\0" in text:
            raise ValueError(f"{key} must be text, not {_kind(text)}")
        env[key] = text
    return env


def _cgroup(value) -> dict[str, str]:
    files = _env(value)
    for key in files:
        if "/" in key or "." not in key or key.startswith("."):
            raise ValueError(f"bad cgroup file {key!r} (controller.file, e.g. memory.max)")
    return files


def _id(value, lookup, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    elif isinstance(value, str) and value:
        try:
            return lookup(value)
        except KeyError:
            raise ValueError(f"unknown {what} {value!r}") from None
    else:
        raise ValueError(f"bad {what} {value!r}")
    if not 0 <= number < 2**32 - 1:
        raise ValueError(f"bad {what} {value!r}")
    return number


def _user(value) -> int:
    return _id(value, lambda name: pwd.getpwnam(name).pw_uid, "user")


def _unix_group(value) -> int:
    return _id(value, lambda name: grp.getgrnam(name).gr_gid, "group")


def _absolute_path(value) -> str:
    path = _text(value)
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"must be an absolute path, not {value!r}")
    return path


def _octal(value) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip(), 8)
        except ValueError:
            raise ValueError(f"bad octal mask {value!r}") from None
    mask = _integer(value)
    if not 0 <= mask <= 0o777:
        raise ValueError(f"must be between 000 and 777, not {oct(mask)[2:]}")
    return mask


def _limit(value) -> int | None:
    if value in ("unlimited", "infinity"):
        return None
    try:
        return _count(value)
    except ValueError:
        raise ValueError(f'bad limit {value!r} (a number or "unlimited")') from None


def _rlimits(value) -> dict[str, list]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table, not {_kind(value)}")
    limits = {}
    for key, given in value.items():
        name = key.lower().removeprefix("rlimit_")
        if name not in RLIMIT_NAMES:
            raise ValueError(f"unknown resource {key!r} (one of {', '.join(RLIMIT_NAMES)})")
        pair = given if isinstance(given, list) else [given, given]
        if len(pair) != 2:
            raise ValueError(f"{key}: give one limit or [soft, hard]")
        soft, hard = _limit(pair[0]), _limit(pair[1])
        if hard is not None and (soft is None or soft > hard):
            raise ValueError(f"{key}: the soft limit is above the hard limit")
        limits[name] = [soft, hard]
    return limits


def _nice(value) -> int:
    number = _integer(value)
    if not -20 <= number <= 19:
        raise ValueError(f"must be between -20 and 19, not {number}")
    return number


def _sched(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table, not {_kind(value)}")
    _known_keys(value, ("policy", "priority"))
    policy = value.get("policy")
    if policy not in SCHED_POLICIES:
        raise ValueError(f"policy must be one of {', '.join(SCHED_POLICIES)}, not {policy!r}")
    priority = _integer(value.get("priority", 0))
    low, high = (1, 99) if policy in ("fifo", "rr") else (0, 0)
    if not low <= priority <= high:
        raise ValueError(f"{policy} takes a priority in {low}..{high}, not {priority}")
    return {"policy": policy, "priority": priority}


def _cpus(value) -> list[int]:
    """CPU numbers: a list, one number, or text like "0,2-3"."""
    if isinstance(value, str):
        cpus = []
        for part in value.split(","):
            first, dash, last = part.strip().partition("-")
            try:
                low, high = _count(first), _count(last if dash else first)
            except ValueError:
                raise ValueError(f"bad CPU list {value!r}") from None
            if low > high:
                raise ValueError(f"bad CPU range {part.strip()!r}")
            cpus.extend(range(low, high + 1))
    elif isinstance(value, list):
        cpus = [_count(cpu) for cpu in value]
    else:
        cpus = [_count(value)]
    if not cpus:
        raise ValueError("no CPUs")
    return sorted(set(cpus))


def _output(value) -> str:
    text = _text(value)
    if text in ("inherit", "null", "syslog"):
        return text
    if text.startswith("file:"):
        return "file:" + _absolute_path(text[5:])
    raise ValueError(f"must be inherit, null, syslog or file:/abs/path, not {value!r}")


def _output_or_stdout(value) -> str:
    return "stdout" if value == "stdout" else _output(value)


def _readiness(value) -> str:
    text = _text(value)
    kind, colon, arg = text.partition(":")
    if text in ("none", "notify"):
        return text
    if colon and kind == "path":
        return "path:" + _absolute_path(arg)
    if colon and kind == "delay":
        return f"delay:{_seconds(arg)!r}"
    raise ValueError(f"must be none, notify, path:/abs/path or delay:SECONDS, not {value!r}")


def _choice(choices: str):
    def parse(value):
        if value not in choices.split("|"):
            raise ValueError(f"must be {choices.replace('|', ', ')}, not {value!r}")
        return value
    return parse


_PARSERS = {
    "name": _name, "names": _names, "text": _text, "command": _argv_of,
    "command line": _command_line, "list of text": _argv, "table of text": _env,
    "cgroup files": _cgroup, "user": _user, "unix group": _unix_group,
    "absolute path": _absolute_path, "octal": _octal, "rlimits": _rlimits, "nice": _nice,
    "sched": _sched, "cpu list": _cpus, "output": _output, "output or stdout": _output_or_stdout,
    "size": _size, "count": _count, "number": _number, "seconds": _seconds, "signal": _signal,
    "readiness": _readiness,
}


def _known_keys(table: dict, known) -> None:
    for key in table:
        if key not in known:
            raise ValueError(f"unknown key {key!r}")


# ---- QNX trees --------------------------------------------------------------------------

class _TreeError(ValueError):
    """A problem inside a condition tree, with where it is: ("condition", 0, "action", 1)."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path


_CONDITION_KEYS = ("name", "type", "flags", "from", "to", "rtype", "rclass", "rseverity", "action")
_TYPE_PARAMS = {q.CONDSTATE: ("from", "to"), q.CONDRAISE: ("rtype", "rclass", "rseverity")}
_ACTION_KEYS = ("name", "kind", "flags", "params", "fail")
_FAIL_KEYS = ("name", "kind", "params")


def _qnx_value(value, table: dict[int, str], what: str) -> int:
    """A QNX constant by name (as in <ha/ham.h>) or by number."""
    if isinstance(value, int) and not isinstance(value, bool) and value in table:
        return value
    for number, name in table.items():
        if value == name:
            return number
    raise ValueError(f"unknown {what} {value!r}")


def _qnx_flags(value, table: dict[int, str], what: str) -> int:
    flags = 0
    for item in value if isinstance(value, list) else [value]:
        flags |= _qnx_value(item, table, what)
    return flags


def _tables(value, what: str) -> list[dict]:
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            raise ValueError(f"each {what} must be a table, not {_kind(item)}")
    return items


def _conditions(value, ename: str, kind: str = "attached") -> list[dict]:
    """Normalise QNX condition trees, held to the model's rules on a scratch entity."""
    tree, entity = model.Model(), model.Entity(ename, kind)
    conditions = []
    for index, raw in enumerate(_tables(value, "condition")):
        try:
            conditions.append(_condition(tree, entity, raw, ("condition", index)))
        except _TreeError:
            raise
        except (ValueError, model.HamError) as err:
            raise _TreeError(("condition", index), f"condition {raw.get('name')!r}: {_why(err)}")
    return conditions


def _why(err: Exception) -> str:
    return err.strerror if isinstance(err, model.HamError) else str(err)


def _condition(tree, entity, raw: dict, path: tuple) -> dict:
    _known_keys(raw, _CONDITION_KEYS)
    if "type" not in raw:
        raise ValueError("no type")
    ctype = _qnx_value(raw["type"], q.CONDITION_NAMES, "condition type")
    flags = _qnx_flags(raw.get("flags", []), q.CONDITION_FLAG_NAMES, "condition flag")
    allowed = _TYPE_PARAMS.get(ctype, ())
    for key in _CONDITION_KEYS[3:8]:
        if key in raw and key not in allowed:
            raise ValueError(f"{key} belongs to a CONDSTATE or CONDRAISE condition")
    if flags & q.HCONDSTATEMASK and ctype != q.CONDSTATE:
        raise ValueError("the state-set flags belong to a CONDSTATE condition")
    params = {key: _integer(raw.get(key, 0)) for key in allowed}
    cond = tree.add_condition(entity, model.Condition(raw.get("name"), ctype, flags, params=params))
    actions = []
    for index, action in enumerate(_tables(raw.get("action", []), "action")):
        where = path + ("action", index)
        try:
            actions.append(_action(tree, entity, cond, action, where))
        except _TreeError:
            raise
        except (ValueError, model.HamError) as err:
            raise _TreeError(where, f"condition {cond.name!r} action {action.get('name')!r}: "
                                    f"{_why(err)}")
    return {"name": cond.name, "type": ctype, "flags": flags, **params, "actions": actions}


def _params(kind, raw) -> dict:
    """An action's parameters as hamtools.ham's API sends them, with the API's defaults."""
    if not isinstance(raw, dict):
        raise ValueError(f"params must be a table, not {_kind(raw)}")
    params = dict(raw)
    if kind == "execute":
        params.setdefault("timeout", 60)
    elif kind == "log":
        params.setdefault("verbosity", 0)
        params["prefix"] = int(bool(params.get("prefix", 0)))
    elif kind == "notify_signal":
        params.setdefault("code", 0)
        if "signum" in params:
            params["signum"] = _signal(params["signum"])
    return params


def _action(tree, entity, cond, raw: dict, path: tuple) -> dict:
    _known_keys(raw, _ACTION_KEYS)
    kind = raw.get("kind")
    flags = _qnx_flags(raw.get("flags", []), q.ACTION_FLAG_NAMES, "action flag")
    params = _params(kind, raw.get("params", {}))
    action = tree.add_action(entity, cond, model.Action(raw.get("name"), kind, params, flags))
    fails = []
    for index, fail in enumerate(_tables(raw.get("fail", []), "fail")):
        try:
            _known_keys(fail, _FAIL_KEYS)
            params = _params(fail.get("kind"), fail.get("params", {}))
            added = tree.add_fail(action, model.FailAction(fail.get("name"), fail.get("kind"),
                                                           params))
        except (ValueError, model.HamError) as err:
            raise _TreeError(path + ("fail", index), f"condition {cond.name!r} action "
                             f"{action.name!r} fail {fail.get('name')!r}: {_why(err)}")
        fails.append({"name": added.name, "kind": added.kind, "params": added.params})
    return {"name": action.name, "kind": kind, "params": action.params, "flags": flags,
            "fails": fails}


# ---- validation -------------------------------------------------------------------------

def _fill(raw: dict, keys: dict, source: str, label) -> dict:
    """Parse every key of raw against keys (the schema); defaults for the rest."""
    if not isinstance(raw, dict):
        raise ConfigError(source, f"must be a table, not {_kind(raw)}")
    for key in raw:
        if key not in keys:
            raise ConfigError(source, f"unknown key {key!r}")
    filled = {}
    for key, (kind, default, _doc) in keys.items():
        target = _SPEC_KEY.get(key, key)
        if key in raw:
            parse = _PARSERS.get(kind) or _choice(kind)
            try:
                filled[target] = parse(raw[key])
            except ValueError as err:
                raise ConfigError(source, f"{label(key)}: {err}") from None
        elif target not in filled:
            fresh = isinstance(default, (dict, list))  # never share a mutable default
            filled[target] = type(default)(default) if fresh else default
    return filled


def validate(raw: dict, source: str, spelling: dict[str, str] | None = None, where=None) -> dict:
    """The canonical spec for raw (SERVICE_KEYS' keys), or ConfigError at source.

    spelling maps keys to the names the user wrote (a startup file's HEARTBEAT) for
    messages; where(path) gives the source of a part of a condition tree, if it knows better.
    """
    def label(key: str) -> str:
        return (spelling or {}).get(key, key)

    def fail(message: str):
        raise ConfigError(source, message)

    if not isinstance(raw, dict):
        fail(f"a service must be a table, not {_kind(raw)}")
    if "command" in raw and "argv" in raw:
        fail("give command or argv, not both")
    spec = _fill({key: value for key, value in raw.items() if key != "condition"}, SERVICE_KEYS,
                 source, label)
    if spec["name"] is None:
        fail(f"no {label('name')}")
    if spec["argv"] is None:
        fail("no command (command or argv)")
    if spec["uid"] is not None and spec["gid"] is None:
        try:
            spec["gid"] = pwd.getpwuid(spec["uid"]).pw_gid
        except KeyError:
            fail(f"{label('uid')}: uid {spec['uid']} has no passwd entry: set gid too")
    for key in ("missed_low", "missed_high"):
        if spec[key] < 1:
            fail(f"{label(key)}: must be at least 1")
    if spec["missed_low"] > spec["missed_high"]:
        fail(f"{label('missed_low')} ({spec['missed_low']}) is above "
             f"{label('missed_high')} ({spec['missed_high']})")
    if spec["restart_window"] <= 0:
        fail(f"{label('restart_window')}: must be positive")
    if spec["backoff_factor"] < 1:
        fail("backoff_factor: must be at least 1")
    if spec["backoff_max"] < spec["backoff_initial"]:
        fail("backoff_max is below backoff_initial")
    if (spec["on_limit"] == "exec") != (spec["on_limit_command"] is not None):
        fail("on_limit_command goes with on_limit = exec, and only with it")
    if spec["on_limit"] == "escalate" and spec["group"] is None:
        fail(f"on_limit = escalate restarts the service's group: set {label('group')} too")
    if spec["name"] in spec["after"]:
        fail(f"{label('after')}: {spec['name']!r} cannot start after itself")
    if "condition" in raw:
        try:
            spec["conditions"] = _conditions(raw["condition"], spec["name"])
        except _TreeError as err:
            raise ConfigError(where(err.path) if where else source, str(err)) from None
        except ValueError as err:
            fail(f"condition: {err}")
    spec["source"] = source
    return spec


ENTITY_TABLES = {"global": ("condition",), "placeholder": ("flags", "condition")}


def validate_entity(raw, kind: str, name: str, source: str, where=None) -> dict:
    """The global entity's conditions, or a placeholder (QNX ham_entity: conditions and
    actions waiting for a process to attach), from a TOML table:
    {"name", "kind", "flags", "conditions", "source"}, or ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError(source, f"{kind} must be a table, not {_kind(raw)}")
    allowed = ENTITY_TABLES[kind]
    for key in raw:
        if key not in allowed:
            raise ConfigError(source, f"unknown key {key!r} in a {kind} table ({', '.join(allowed)})")
    if kind == "placeholder":
        try:
            _name(name)
        except ValueError as err:
            raise ConfigError(source, f"placeholder: {err}") from None
    try:
        flags = _qnx_flags(raw.get("flags", []), q.ENTITY_FLAG_NAMES, "entity flag")
    except ValueError as err:
        raise ConfigError(source, f"flags: {err}") from None
    try:
        conditions = _conditions(raw.get("condition", []), name, kind)
    except _TreeError as err:
        raise ConfigError(where(err.path) if where else source, str(err)) from None
    except ValueError as err:
        raise ConfigError(source, f"condition: {err}") from None
    return {"name": name, "kind": kind, "flags": flags, "conditions": conditions, "source": source}


def validate_groups(raw: dict, sources: dict[str, str]) -> dict[str, dict]:
    """Service groups: name -> {strategy, window, source}; sources gives each one's FILE:LINE."""
    groups = {}
    for name, table in raw.items():
        source = sources[name]
        try:
            _name(name)
        except ValueError as err:
            raise ConfigError(source, f"group: {err}") from None
        group = _fill(table, GROUP_KEYS, source, str)
        if group["window"] <= 0:
            raise ConfigError(source, "window: must be positive")
        group["source"] = source
        groups[name] = group
    return groups


def default_group(source: str) -> dict:
    """The settings of a group that a service names but no config defines."""
    group = {key: default for key, (_type, default, _doc) in GROUP_KEYS.items()}
    return {**group, "source": source}
