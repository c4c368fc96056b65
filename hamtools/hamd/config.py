"""Configuration files -> validated service specs (hamtools.hamd.service) and groups.

Two formats, one model: a path ending in .toml is TOML ([service.NAME] or [[service]]
tables, [group.NAME] tables, [[service.NAME.condition]] QNX trees, and the trees of entities
that are not services: [[global.condition]] on the global entity, [placeholder.NAME] for
QNX's ham_entity); anything else is seed 001's startup file, one service per line:
`VAR=value ... /path/prog args`. load() reads all the files and checks what spans them
(unique names, AFTER targets, no start-order cycles): it returns everything or raises the
first ConfigError (`FILE:LINE: message`), so a bad config starts nothing. diff() tells a
reload what changed.

Adopting a running process by pid (ham_attach with a pid) has no file form: at boot no pid
is known in advance, and a pid written in a file would name whatever process holds it then.
"""

import os
import signal

from hamtools.core import words
from hamtools.hamd import model, service
from hamtools.hamd.service import ConfigError

# Seed 001's special variables; any other VAR=value goes into the service's environment.
STARTUP_VARS = {
    "NAME": "name", "HEARTBEAT": "heartbeat", "MISSED_LOW": "missed_low",
    "MISSED_HIGH": "missed_high", "RESTART": "restart", "MAX_RESTARTS": "max_restarts",
    "RESTART_WINDOW": "restart_window", "GROUP": "group", "SAFE_AFTER": "safe_after",
    "SAFE_ARG": "safe_arg", "KILL_SIGNAL": "kill_signal", "GRACE": "grace", "USER": "uid",
    "CWD": "cwd", "AFTER": "after",
}
STARTUP_SPELLING = {key: var for var, key in STARTUP_VARS.items()}


def load(paths: list[str]) -> tuple[list[dict], dict[str, dict], list[dict]]:
    """(specs in file order, groups by name, entity trees) from the files, or ConfigError.
    The entity trees are the global entity's (all files' conditions in one entry, first) and
    the placeholders: {"name", "kind", "flags", "conditions", "source"}, each global
    condition with its own "source"."""
    specs: list[dict] = []
    spelling: dict[str, dict] = {}  # service name -> how its file spells keys (for messages)
    groups: dict[str, dict] = {}
    placeholders: list[dict] = []
    global_conditions: list[dict] = []
    for path in paths:
        text = _read(path)
        if path.endswith(".toml"):
            found, found_groups, trees = _load_toml(path, text)
            for name, group in found_groups.items():
                if name in groups:
                    raise ConfigError(group["source"], f"group {name!r} is defined twice "
                                                       f"(first at {groups[name]['source']})")
                groups[name] = group
        else:
            found, trees = _load_startup(path, text), []
        for spec in found:
            _unique(spec, specs, placeholders)
            specs.append(spec)
            spelling[spec["name"]] = {} if path.endswith(".toml") else STARTUP_SPELLING
        for tree in trees:
            if tree["kind"] == "placeholder":
                _unique(tree, specs, placeholders)
                placeholders.append(tree)
                continue
            for cond in tree["conditions"]:
                first = next((c for c in global_conditions if c["name"] == cond["name"]), None)
                if first is not None:
                    raise ConfigError(cond["source"], f"global condition {cond['name']!r} is defined "
                                                      f"twice (first at {first['source']})")
                global_conditions.append(cond)
    for spec in specs:  # a service AFTER a placeholder: a placeholder is never started
        for name in spec["after"]:
            holder = next((p for p in placeholders if p["name"] == name), None)
            if holder is not None:
                raise ConfigError(spec["source"], f"{spelling[spec['name']].get('after', 'after')}: "
                                                  f"{name!r} is a placeholder (at {holder['source']}), "
                                                  "not a service")
    _check_order(specs, spelling)
    for spec in specs:  # every group a service names exists, with default settings if need be
        if spec["group"] is not None and spec["group"] not in groups:
            groups[spec["group"]] = service.default_group(spec["source"])
    trees = placeholders
    if global_conditions:
        trees = [{"name": model.GLOBAL, "kind": "global", "flags": 0, "conditions": global_conditions,
                  "source": global_conditions[0]["source"]}] + placeholders
    return specs, groups, trees


def _unique(item: dict, specs: list[dict], placeholders: list[dict]) -> None:
    """Services and placeholders share one name space (entities), across all files."""
    first = next((s for s in specs + placeholders if s["name"] == item["name"]), None)
    if first is not None:
        what = "placeholder" if item.get("kind") == "placeholder" else "service"
        raise ConfigError(item["source"], f"{what} {item['name']!r} is defined twice "
                                          f"(first at {first['source']})")


def diff(old: list[dict], new: list[dict]) -> tuple[list, list, list, list]:
    """(added, removed, changed, unchanged) by name; specs are compared without source.
    removed holds old specs, the others new ones, each in its list's order."""
    before = {spec["name"]: spec for spec in old}
    names = {spec["name"] for spec in new}
    added, changed, unchanged = [], [], []
    for spec in new:
        previous = before.get(spec["name"])
        if previous is None:
            added.append(spec)
        elif _sans_source(previous) == _sans_source(spec):
            unchanged.append(spec)
        else:
            changed.append(spec)
    return added, [spec for spec in old if spec["name"] not in names], changed, unchanged


def schema_markdown() -> str:
    """The README's schema tables: service keys (with their startup-file spelling) and group
    keys, from service.SERVICE_KEYS and service.GROUP_KEYS."""
    startup = {key: f"`{var}`" for key, var in STARTUP_SPELLING.items()}
    startup.update(argv="the words after the variables", env="any other `VAR=value`")
    rows = ["| key (TOML) | startup file | type | default | meaning |", "|---|---|---|---|---|"]
    for key, (kind, default, doc) in service.SERVICE_KEYS.items():
        rows.append(_row(f"`{key}`", startup.get(key, ""), kind, _shown(kind, default), doc))
    rows += ["", "| group key (TOML) | type | default | meaning |", "|---|---|---|---|"]
    for key, (kind, default, doc) in service.GROUP_KEYS.items():
        rows.append(_row(f"`{key}`", kind, _shown(kind, default), doc))
    return "\n".join(rows) + "\n"


def _row(*cells: str) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _shown(kind: str, default) -> str:
    if default is None:
        return ""
    if kind == "signal":
        return signal.Signals(default).name
    if isinstance(default, (dict, list)):
        return repr(default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def _sans_source(spec: dict) -> dict:
    return {key: value for key, value in spec.items() if key != "source"}


def _read(path: str) -> str:
    try:
        with open(path, "rb") as file:
            return file.read().decode()
    except OSError as err:
        raise ConfigError(path, f"cannot read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, "not UTF-8 text") from None


def _resolve_program(argv: list[str], path: str) -> list[str]:
    """A program given as ./x or ../x is relative to the config file's directory."""
    if argv[0].startswith(("./", "../")):
        here = os.path.dirname(os.path.abspath(path))
        argv = [os.path.normpath(os.path.join(here, argv[0]))] + argv[1:]
    return argv


def _check_order(specs: list[dict], spelling: dict[str, dict]) -> None:
    """AFTER names known services and forms no cycle."""
    by_name = {spec["name"]: spec for spec in specs}

    def label(spec: dict) -> str:
        return spelling[spec["name"]].get("after", "after")

    for spec in specs:
        for name in spec["after"]:
            if name not in by_name:
                raise ConfigError(spec["source"], f"{label(spec)}: unknown service {name!r}")
    done: set[str] = set()
    for spec in specs:  # depth-first from each service in file order; a name met again on the
        trail = [spec["name"]]  # current trail closes a cycle
        todo = [iter(spec["after"])]
        while todo:
            name = next(todo[-1], None)
            if name is None:
                done.add(trail.pop())
                todo.pop()
            elif name in trail:
                cycle = trail[trail.index(name):] + [name]
                first = by_name[cycle[0]]
                raise ConfigError(first["source"],
                                  f"{label(first)}: start-order cycle {' -> '.join(cycle)}")
            elif name not in done:
                trail.append(name)
                todo.append(iter(by_name[name]["after"]))


# ---- seed 001's startup file ------------------------------------------------------------

def _load_startup(path: str, text: str) -> list[dict]:
    specs = []
    for number, line in _logical_lines(text):
        source = f"{path}:{number}"
        try:
            items = words.split(line)
        except ValueError as err:
            raise ConfigError(source, f"bad quoting: {err}") from None
        if not items:
            continue
        raw: dict = {}
        env: dict[str, str] = {}
        while items and _is_assignment(items[0]):
            var, _, value = items.pop(0).partition("=")
            if var in env or STARTUP_VARS.get(var) in raw:
                raise ConfigError(source, f"{var} is set twice")
            if var in STARTUP_VARS:
                raw[STARTUP_VARS[var]] = value
            else:
                env[var] = value
        if not items:
            raise ConfigError(source, "no program after the variables")
        raw["argv"], raw["env"] = items, env
        raw.setdefault("name", os.path.basename(items[0]))
        spec = service.validate(raw, source, STARTUP_SPELLING)
        spec["argv"] = _resolve_program(spec["argv"], path)
        specs.append(spec)
    return specs


def _logical_lines(text: str):
    """(first line number, text) per entity: `#` comment lines and blank lines are skipped, a
    line ending in an unescaped backslash continues on the next."""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not pending:
            start = number
            if line.lstrip().startswith("#"):
                continue
        if (len(line) - len(line.rstrip("\\"))) % 2:
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def _is_assignment(word: str) -> bool:
    """NAME=value with NAME a shell variable name: [A-Za-z_][A-Za-z0-9_]*."""
    name, equals, _ = word.partition("=")
    return bool(equals and name and not name[0].isdigit()
                and all(c == "_" or (c.isascii() and c.isalnum()) for c in name))


# ---- TOML ---------------------------------------------------------------------------------

def _load_toml(path: str, text: str) -> tuple[list[dict], dict[str, dict]]:
    import tomllib  # here, not at the top: it pulls typing and datetime into ham's memory

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _syntax_error(path, text, str(err)) from None
    headers = _header_lines(text, tomllib)

    def where(keys: tuple) -> str:
        return f"{path}:{_line_of(headers, keys)}"

    for key in data:
        if key not in ("service", "group", "global", "placeholder"):
            raise ConfigError(where((key,)), f"unknown table {key!r} (service, group, global or placeholder)")
    tables = data.get("service", {})
    if isinstance(tables, dict):
        found = [(("service", name), name, table) for name, table in tables.items()]
    elif isinstance(tables, list):
        found = [(("service", index), table.get("name") if isinstance(table, dict) else None, table)
                 for index, table in enumerate(tables)]
    else:
        raise ConfigError(where(("service",)), "service must be a table")
    specs = []
    for keys, name, table in found:
        source = where(keys)
        if not isinstance(table, dict):
            raise ConfigError(source, f"service {name!r} must be a table")
        if isinstance(tables, dict) and table.get("name", name) != name:
            raise ConfigError(source, f"name {table['name']!r} differs from the table's {name!r}")
        raw = {**table, "name": name} if isinstance(tables, dict) else table
        spec = service.validate(raw, source, where=lambda sub, keys=keys: where(keys + sub))
        spec["argv"] = _resolve_program(spec["argv"], path)
        specs.append(spec)
    groups = data.get("group", {})
    if not isinstance(groups, dict):
        raise ConfigError(where(("group",)), "group must be a table")
    groups = service.validate_groups(groups, {name: where(("group", name)) for name in groups})
    return specs, groups, _entity_tables(data, where)


def _entity_tables(data: dict, where) -> list[dict]:
    """[global] (its conditions) and [placeholder.NAME] tables: entity trees, validated."""
    trees = []
    if "global" in data:
        tree = service.validate_entity(data["global"], "global", model.GLOBAL, where(("global",)),
                                       where=lambda sub: where(("global",) + sub))
        for index, cond in enumerate(tree["conditions"]):
            cond["source"] = where(("global", "condition", index))
        trees.append(tree)
    tables = data.get("placeholder", {})
    if not isinstance(tables, dict):
        raise ConfigError(where(("placeholder",)), "placeholder must be a table of [placeholder.NAME] tables")
    for name, table in tables.items():
        keys = ("placeholder", name)
        trees.append(service.validate_entity(table, "placeholder", name, where(keys),
                                             where=lambda sub, keys=keys: where(keys + sub)))
    return trees


def _syntax_error(path: str, text: str, message: str) -> ConfigError:
    """tomllib's "... (at line N, column M)" as FILE:N: ... (column M)."""
    head, found, place = message.rpartition(" (at line ")
    if found:
        line, _, column = place.rstrip(")").partition(", column ")
        return ConfigError(f"{path}:{line}", f"{head} (column {column})")
    head, found, _ = message.rpartition(" (at end of document)")
    if found:
        return ConfigError(f"{path}:{max(len(text.splitlines()), 1)}", f"{head} (at the end)")
    return ConfigError(path, message)


def _header_lines(text: str, tomllib) -> dict[tuple, int]:
    """Where each table header is: its data path (array tables with their index, as in
    ("service", "w", "condition", 1)) -> line number. tomllib reads each header's keys."""
    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}  # an array table's data path -> elements so far
    arrays: set[tuple] = set()  # key paths declared with [[...]]
    for number, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("["):
            continue
        try:
            keys, is_array = _header_keys(tomllib.loads(line))
        except tomllib.TOMLDecodeError:
            continue  # a line of a multi-line value
        if keys is None:
            continue
        concrete: tuple = ()
        for depth, key in enumerate(keys, 1):
            concrete += (key,)
            if is_array and depth == len(keys):
                counts[concrete] = counts.get(concrete, 0) + 1
                concrete += (counts[concrete] - 1,)
            elif keys[:depth] in arrays:
                concrete += (counts.get(concrete, 1) - 1,)
        if is_array:
            arrays.add(keys)
        lines.setdefault(concrete, number)
    return lines


def _header_keys(doc: dict) -> tuple[tuple | None, bool]:
    """The keys of the one header that doc (one line parsed) holds, and whether it is [[...]]."""
    keys: list[str] = []
    node, is_array = doc, False
    while True:
        if isinstance(node, list) and len(node) == 1 and not is_array:
            node, is_array = node[0], True
            continue
        if not isinstance(node, dict) or len(node) > 1 or (node and is_array):
            return None, False
        if not node:
            return (tuple(keys), is_array) if keys else (None, False)
        (key, node), = node.items()
        keys.append(key)


def _line_of(lines: dict[tuple, int], keys: tuple) -> int:
    """The line of the header for keys, else of the first header under it, else of the
    nearest enclosing one; 1 when nothing matches (a table made of dotted keys)."""
    while keys:
        if keys in lines:
            return lines[keys]
        under = [number for found, number in lines.items() if found[:len(keys)] == keys]
        if under:
            return min(under)
        keys = keys[:-1]
    return 1
