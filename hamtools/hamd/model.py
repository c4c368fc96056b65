"""The HAM tree, with no I/O: entities, their conditions, their actions and action-fail lists.

QNX's rules live here: naming (no '/', bounded length), what may be added where (one restart
per entity, only in death conditions; no waitfor in a NOWAIT condition; no restart or
heartbeat_healthy in a fail list), enable/disable with HRECURSE, flag control, state and
raise matching, and the serialised form that ham persists (SCHEMA).
Every refusal is a HamError carrying the errno QNX documents.
"""

import errno
import math
import os

from hamtools.core import hamconsts as q

ADMIN_UIDS = (0, os.geteuid())  # root and ham's own uid, who may do anything (ham never changes
#                                 its uid; asked once: a flood is checked message by message)
GLOBAL = ".__global"  # the global entity's name (QNX's hidden name for it)
SCHEMA = 1

ACTION_KINDS = ("restart", "execute", "waitfor", "notify_pulse", "notify_signal",
                "heartbeat_healthy", "log")
FAIL_KINDS = ("execute", "waitfor", "notify_pulse", "notify_signal", "log")
DEATH_TYPES = (q.CONDDEATH, q.CONDABNORMALDEATH)
ENTITY_KINDS = ("attached", "self", "placeholder", "global")
RUN_STATES = ("running", "starting", "backoff", "stopped", "dead", "failed")
# Room in the tree (QNX answers ENOMEM when it has none): generous for any real system,
# bounded so no client can grow ham's memory and state file without limit.
MAX_CONDITIONS, MAX_ACTIONS, MAX_FAILS = 64, 64, 16
# What one unprivileged user may add where it owns nothing (its notifications on another's
# entity): a quarter of each room, so a hostile user cannot fill the owner's.
FOREIGN_ROOM = {"condition": MAX_CONDITIONS // 4, "action": MAX_ACTIONS // 4, "action-fail": MAX_FAILS // 4}
CONDITION_FLAGS = (q.HREARMAFTERRESTART | q.HCONDINDEPENDENT | q.HCONDNOWAIT | q.HCONDOTHER
                   | q.HCONDKEEPONEMPTY | q.HCONDSTATEMASK)
ACTION_FLAGS = q.HREARMAFTERRESTART | q.HACTIONDONOW | q.HACTIONBREAKONFAIL | q.HACTIONKEEPONFAIL


class HamError(OSError):
    def __init__(self, err: int, message: str):
        super().__init__(err, message)


class Record:
    """A small mutable record: FIELDS lists (name, default), a callable default being a factory
    (dict, list). Not dataclasses: that module costs the daemon megabytes of resident size."""

    __slots__ = ()
    FIELDS: tuple = ()

    def __init__(self, *args, **kwargs):
        if len(args) > len(self.FIELDS):
            raise TypeError(f"{type(self).__name__} takes at most {len(self.FIELDS)} values")
        given = dict(zip((name for name, _ in self.FIELDS), args))
        clash = given.keys() & kwargs.keys()
        if clash:
            raise TypeError(f"{type(self).__name__} got {sorted(clash)} twice")
        given.update(kwargs)
        for name, default in self.FIELDS:
            if name in given:
                setattr(self, name, given.pop(name))
            else:
                setattr(self, name, default() if callable(default) else default)
        if given:
            raise TypeError(f"{type(self).__name__} has no field {sorted(given)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.FIELDS[0][0]}={getattr(self, self.FIELDS[0][0])!r})"


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\0" in name or "\n" in name:
        raise HamError(errno.EINVAL, f"bad {what} name {name!r}")
    if len(name.encode()) >= q._POSIX_PATH_MAX:
        raise HamError(errno.ENAMETOOLONG, f"{what} name is too long")
    return name


class FailAction(Record):
    FIELDS = (("name", ""), ("kind", ""), ("params", dict),
              ("uid", 0), ("gid", 0))  # whoever added it: its execute runs as this uid
    __slots__ = tuple(name for name, _ in FIELDS)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "params": self.params, "uid": self.uid,
                "gid": self.gid}


class Action(Record):
    FIELDS = (
        ("name", ""), ("kind", ""), ("params", dict), ("flags", 0), ("enabled", True),
        ("uid", 0), ("gid", 0),  # whoever added it: execute/restart commands run as this uid
        ("fails", dict),  # name -> FailAction, in insertion order
        ("once", False),  # after a restart: run once more, then go (not re-armed)
        ("runs", 0), ("failures", 0),
        ("removed", False),  # taken out of the tree: a job holding it skips it (not persisted)
        ("ran_episode", None),  # the entity death count when it last ran (not persisted)
    )
    __slots__ = tuple(name for name, _ in FIELDS)

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "params": self.params, "flags": self.flags,
                "enabled": self.enabled, "uid": self.uid, "gid": self.gid, "once": self.once,
                "runs": self.runs, "failures": self.failures,
                "fails": [f.to_dict() for f in self.fails.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> "Action":
        fails = {f["name"]: FailAction(f["name"], f["kind"], dict(f["params"]), int(f.get("uid", 0)),
                                       int(f.get("gid", 0)))
                 for f in data.get("fails", [])}
        return cls(data["name"], data["kind"], dict(data["params"]), int(data["flags"]),
                   bool(data["enabled"]), int(data["uid"]), int(data["gid"]), fails,
                   bool(data.get("once", False)), int(data.get("runs", 0)),
                   int(data.get("failures", 0)))


class Condition(Record):
    FIELDS = (
        ("name", ""), ("type", 0), ("flags", 0), ("enabled", True),
        ("params", dict),  # CONDSTATE: from/to; CONDRAISE: rtype/rclass/rseverity
        ("actions", dict),  # name -> Action, in insertion order
        ("fired", 0),
        ("config", None),  # made by a configuration file: its normalised entry (a reload
        #                    compares with it); None: made through the API
        ("uid", 0),  # whoever added it (what others add to an entity is held to FOREIGN_ROOM)
    )
    __slots__ = tuple(name for name, _ in FIELDS)

    @property
    def queue(self) -> str:
        """Which execution queue runs it: NOWAIT wins over INDEPENDENT (QNX)."""
        if self.flags & q.HCONDNOWAIT:
            return "nowait"
        if self.flags & q.HCONDINDEPENDENT:
            return "independent"
        return "other"

    def matches_state(self, old: int, new: int) -> bool:
        return (_state_matches(self.params.get("from", 0), old, self.flags,
                               q.HCONDSTATEFROMSET, q.HCONDSTATEFROMINV)
                and _state_matches(self.params.get("to", 0), new, self.flags,
                                   q.HCONDSTATETOSET, q.HCONDSTATETOINV))

    def matches_raise(self, rtype: int, rclass: int, rseverity: int) -> bool:
        wanted = (self.params.get("rtype", 0), self.params.get("rclass", 0),
                  self.params.get("rseverity", 0))
        return all(w == 0 or w == got for w, got in zip(wanted, (rtype, rclass, rseverity)))

    def to_dict(self) -> dict:
        data = {"name": self.name, "type": self.type, "flags": self.flags, "enabled": self.enabled,
                "params": self.params, "fired": self.fired, "uid": self.uid,
                "actions": [a.to_dict() for a in self.actions.values()]}
        if self.config is not None:
            data["config"] = self.config
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Condition":
        actions = {a["name"]: Action.from_dict(a) for a in data.get("actions", [])}
        return cls(data["name"], int(data["type"]), int(data["flags"]), bool(data["enabled"]),
                   dict(data.get("params", {})), actions, int(data.get("fired", 0)),
                   data.get("config"), int(data.get("uid", 0)))


def _state_matches(spec: int, value: int, flags: int, set_flag: int, inv_flag: int) -> bool:
    """A state spec: a value, CONDSTATEANY (0), or with the SET flag a bitmask where bit n
    means state n (states 0-31); the INV flag inverts the result."""
    if flags & set_flag:
        hit = 0 <= value < 32 and bool(spec >> value & 1)
    else:
        hit = spec == q.CONDSTATEANY or spec == value
    return hit != bool(flags & inv_flag)


class Entity(Record):
    FIELDS = (
        ("name", ""), ("kind", "attached"), ("flags", 0), ("enabled", True),
        ("conditions", dict),  # name -> Condition
        ("pid", None),
        ("start", None),  # start time of pid (clock ticks since boot): pid reuse guard
        ("argv", None),  # what ham spawned for it (attached by command)
        ("uid", 0), ("gid", 0),  # owner: who attached it; a spawned entity runs as this uid
        ("state", 0),  # the last CONDSTATE value it reported
        ("hb_period", 0.0),  # seconds; 0: no heartbeat
        ("hpdl", 0), ("hpdh", 0), ("hb_state", "healthy"), ("run", "running"),
        ("hb_missed_low", 0), ("hb_missed_high", 0),  # missed-heartbeat episodes (the metrics)
        ("created", 0.0), ("last_death", None), ("restarted", None), ("restarts", 0), ("deaths", 0),
        ("last_beat", 0.0),  # monotonic; not persisted (a new ham starts the count afresh)
        ("beats", 0),  # heartbeats this ham took (not persisted)
        ("notify_state", None), ("notify_status", None), ("notify_errno", None),  # sd_notify's
        #                      last STOPPING/RELOADING/READY, STATUS= and ERRNO= (not persisted)
        ("spawned", False),  # our child (exit status available), not adopted
        ("attach_fires", False),  # a placeholder being filled: CONDATTACH fires (not persisted)
        ("service", None),  # the spec (hamtools.hamd.service) when configured as a service
        ("want", "up"),  # a service: what ham wants of it, up or down (s6's "want"), apart
        #                  from what it is (run); only an operator and the end of its policy
        #                  change it
        ("policy", None),  # a service: its restart history and pending backoff, as
        #                    hamtools.hamd.policy.saved() writes them (for the next ham)
        ("config", None),  # a placeholder a configuration file made: its normalised entry
        ("ready", False),  # a service that has become ready (not persisted: re-established)
        ("episode", False),  # between a death and the end of its handling (persisted: a ham
        #                      started meanwhile finishes it)
    )
    __slots__ = tuple(name for name, _ in FIELDS)

    @property
    def heartbeat(self) -> bool:
        return self.hb_period > 0

    def restart_action(self) -> "Action | None":
        for cond in self.conditions.values():
            if cond.type in DEATH_TYPES:
                for action in cond.actions.values():
                    if action.kind == "restart":
                        return action
        return None

    def to_dict(self) -> dict:
        keys = ("name", "kind", "flags", "enabled", "pid", "start", "argv", "uid", "gid", "state",
                "hb_period", "hpdl", "hpdh", "hb_state", "run", "created", "last_death",
                "restarted", "restarts", "deaths", "hb_missed_low", "hb_missed_high", "spawned",
                "service", "want", "policy", "config", "episode")
        data = {key: getattr(self, key) for key in keys}
        data["conditions"] = [c.to_dict() for c in self.conditions.values()]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Entity":
        entity = cls(check_name(data["name"], "entity"), data["kind"])
        if entity.kind not in ENTITY_KINDS:
            raise ValueError(f"entity kind {entity.kind!r}")
        for key in ("flags", "uid", "gid", "state", "hpdl", "hpdh", "restarts", "deaths",
                    "hb_missed_low", "hb_missed_high"):
            setattr(entity, key, int(data.get(key, 0)))
        for key in ("pid", "start"):
            setattr(entity, key, None if data.get(key) is None else int(data[key]))
        entity.enabled = bool(data.get("enabled", True))
        entity.argv = None if data.get("argv") is None else [str(a) for a in data["argv"]]
        entity.hb_period = float(data.get("hb_period", 0.0))
        entity.hb_state = str(data.get("hb_state", "healthy"))
        entity.run = str(data.get("run", "running"))
        entity.created = float(data.get("created", 0.0))
        entity.last_death = data.get("last_death")
        entity.restarted = data.get("restarted")
        entity.spawned = bool(data.get("spawned", False))
        entity.episode = bool(data.get("episode", False))
        entity.service = data.get("service")
        entity.want = "down" if data.get("want") == "down" else "up"
        entity.policy = data.get("policy")
        entity.config = data.get("config")
        entity.conditions = {c["name"]: Condition.from_dict(c) for c in data.get("conditions", [])}
        return entity


class Model:
    """The whole tree: entities by name, the global entity always present."""

    def __init__(self) -> None:
        self.entities: dict[str, Entity] = {GLOBAL: Entity(GLOBAL, "global", run="running")}

    @property
    def global_entity(self) -> Entity:
        return self.entities[GLOBAL]

    # ---- lookup ---------------------------------------------------------------------

    def entity(self, name: str) -> Entity:
        found = self.entities.get(name)
        if found is None:
            raise HamError(errno.ENOENT, f"no entity {name!r}")
        return found

    def condition(self, ename: str, cname: str) -> Condition:
        found = self.entity(ename).conditions.get(cname)
        if found is None:
            raise HamError(errno.ENOENT, f"no condition {ename}/{cname}")
        return found

    def action(self, ename: str, cname: str, aname: str) -> Action:
        found = self.condition(ename, cname).actions.get(aname)
        if found is None:
            raise HamError(errno.ENOENT, f"no action {ename}/{cname}/{aname}")
        return found

    def resolve(self, path: str):
        """The entity, condition or action at 'e', 'e/c' or 'e/c/a'."""
        parts = path.strip("/").split("/") if path.strip("/") else []
        if not 1 <= len(parts) <= 3:
            raise HamError(errno.EINVAL, f"bad path {path!r}")
        return (self.entity, self.condition, self.action)[len(parts) - 1](*parts)

    def by_pid(self, pid: int) -> Entity | None:
        for entity in self.entities.values():
            if entity.pid == pid and entity.kind != "global":
                return entity
        return None

    # ---- adding ---------------------------------------------------------------------

    def add_entity(self, entity: Entity) -> Entity:
        check_name(entity.name, "entity")
        existing = self.entities.get(entity.name)
        if existing is not None:
            raise HamError(errno.EEXIST, f"entity {entity.name!r} exists")
        self.entities[entity.name] = entity
        return entity

    def add_condition(self, entity: Entity, cond: Condition) -> Condition:
        check_name(cond.name, "condition")
        _check_path(entity.name, cond.name)
        if not q.CONDMIN <= cond.type <= q.CONDMAX:
            raise HamError(errno.EINVAL, f"condition type {cond.type}")
        if cond.flags & ~CONDITION_FLAGS:
            raise HamError(errno.EINVAL, f"condition flags 0x{cond.flags:x}")
        if cond.name in entity.conditions:
            raise HamError(errno.EEXIST, f"condition {entity.name}/{cond.name} exists")
        _check_room(entity.conditions, MAX_CONDITIONS, f"entity {entity.name!r}")
        entity.conditions[cond.name] = cond
        return cond

    def add_action(self, entity: Entity, cond: Condition, action: Action) -> Action:
        check_name(action.name, "action")
        _check_path(entity.name, cond.name, action.name)
        if action.kind not in ACTION_KINDS:
            raise HamError(errno.EINVAL, f"action kind {action.kind!r}")
        if action.flags & ~ACTION_FLAGS:
            raise HamError(errno.EINVAL, f"action flags 0x{action.flags:x}")
        if action.name in cond.actions:
            raise HamError(errno.EEXIST, f"action {entity.name}/{cond.name}/{action.name} exists")
        if action.kind == "restart":
            if cond.type not in DEATH_TYPES or entity.kind == "global":
                raise HamError(errno.EINVAL, "restart belongs in a death condition of an entity")
            if entity.restart_action() is not None:
                raise HamError(errno.EEXIST, f"entity {entity.name!r} already has a restart action")
        if action.kind == "waitfor" and cond.flags & q.HCONDNOWAIT:
            raise HamError(errno.EINVAL, "a NOWAIT condition takes no waitfor")
        check_params(action.kind, action.params)
        _check_room(cond.actions, MAX_ACTIONS, f"condition {entity.name}/{cond.name}")
        cond.actions[action.name] = action
        return action

    def add_fail(self, action: Action, fail: FailAction) -> FailAction:
        check_name(fail.name, "action-fail")
        if fail.kind not in FAIL_KINDS:
            raise HamError(errno.EINVAL, f"{fail.kind} cannot be in an action-fail list")
        if fail.name in action.fails:
            raise HamError(errno.EEXIST, f"action-fail {fail.name!r} exists")
        check_params(fail.kind, fail.params)
        _check_room(action.fails, MAX_FAILS, f"action {action.name!r}")
        action.fails[fail.name] = fail
        return fail

    # ---- removing -------------------------------------------------------------------

    def remove_entity(self, name: str) -> Entity:
        if name == GLOBAL:
            raise HamError(errno.EINVAL, "the global entity cannot be removed")
        return self.entities.pop(self.entity(name).name)

    # ---- control (enable/disable, flags) ---------------------------------------------

    def control(self, item, command: int, flags: int) -> int:
        """ham_*_control on an Entity, Condition or Action; returns the flags for HGETFLAGS."""
        if command in (q.HENABLE, q.HDISABLE):
            _set_enabled(item, command == q.HENABLE, bool(flags & q.HRECURSE))
            return 0
        if command == q.HGETFLAGS:
            return item.flags
        allowed = {Entity: q.HENTITYKEEPONDEATH, Condition: CONDITION_FLAGS,
                   Action: ACTION_FLAGS & ~q.HACTIONDONOW}[type(item)]
        if flags & ~allowed:
            raise HamError(errno.EINVAL, f"flags 0x{flags:x} cannot be set here")
        if command == q.HADDFLAGS:
            new = item.flags | flags
        elif command == q.HREMOVEFLAGS:
            new = item.flags & ~flags
        elif command == q.HSETFLAGS:
            new = flags
        else:
            raise HamError(errno.EINVAL, f"control command {command}")
        if (isinstance(item, Condition) and new & q.HCONDNOWAIT
                and any(a.kind == "waitfor" for a in item.actions.values())):
            raise HamError(errno.EINVAL, "the condition has waitfor actions: it cannot be NOWAIT")
        item.flags = new
        return 0

    # ---- persistence ----------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "entities": [e.to_dict() for e in self.entities.values()]}

    @classmethod
    def from_dict(cls, data: dict) -> "Model":
        if data.get("schema") != SCHEMA:
            raise ValueError(f"state schema {data.get('schema')!r}, this ham reads {SCHEMA}")
        model = cls()
        for raw in data["entities"]:
            entity = Entity.from_dict(raw)
            model.entities[entity.name] = entity
        if model.global_entity.kind != "global":
            raise ValueError("the global entity is missing")
        return model

    def counts(self) -> tuple[int, int, int]:
        conds = [c for e in self.entities.values() for c in e.conditions.values()]
        return len(self.entities), len(conds), sum(len(c.actions) for c in conds)


def _check_room(items: dict, limit: int, where: str) -> None:
    if len(items) >= limit:
        raise HamError(errno.ENOMEM, f"{where} holds {limit} items already")


def _check_path(*names: str) -> None:
    if len("/proc/ham/" + "/".join(names)) > q._POSIX_PATH_MAX:
        raise HamError(errno.ENAMETOOLONG, "the /proc/ham path would be too long")


def _set_enabled(item, enabled: bool, recurse: bool) -> None:
    item.enabled = enabled
    if recurse:
        children = getattr(item, "conditions", None) or getattr(item, "actions", None) or {}
        for child in children.values():
            _set_enabled(child, enabled, True)


def is_int64(value) -> bool:
    """JSON's integers have no bound; the kernel's and the clock's do (an OverflowError deep
    inside a timer or a syscall would be ham's bug, not the caller's)."""
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63


def check_params(kind: str, params: dict) -> None:
    """Validate an action's parameters (what the API and the sockets both accept)."""
    def text(key):
        value = params.get(key)
        if not isinstance(value, str):
            raise HamError(errno.EINVAL, f"{kind}: {key} must be str")
        return value

    def whole(key):
        value = params.get(key)
        if not is_int64(value):
            raise HamError(errno.EINVAL, f"{kind}: {key} must be a 64-bit int")
        return value

    def number(key):  # a finite one: NaN or infinity would corrupt the timer heap
        value = params.get(key)
        if isinstance(value, float) and math.isfinite(value):
            return value
        return whole(key)

    if kind in ("restart", "execute"):
        line = text("line")
        if not line.strip() or len(line.encode()) >= q._POSIX_PATH_MAX * 16:
            raise HamError(errno.EINVAL, f"{kind}: bad command line")
        if kind == "execute" and number("timeout") <= 0:
            raise HamError(errno.EINVAL, "execute: timeout must be positive")
    elif kind == "waitfor":
        if whole("delay") <= 0:
            raise HamError(errno.EINVAL, "waitfor: delay must be > 0 ms")
        if params.get("path") is not None:
            text("path")
    elif kind == "notify_pulse":
        for key in ("pid", "chid", "code", "value"):
            whole(key)
        if not -128 <= params["code"] <= 127:
            raise HamError(errno.EINVAL, "notify_pulse: code must fit in an int8")
    elif kind == "notify_signal":
        for key in ("pid", "signum", "code", "value"):
            whole(key)
        if not 1 <= params["signum"] <= 64:
            raise HamError(errno.EINVAL, f"notify_signal: bad signal {params['signum']}")
    elif kind == "log":
        text("message")
        whole("verbosity")
        whole("prefix")
