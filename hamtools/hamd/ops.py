"""Every request ham serves, with QNX's errors and the authorisation rules of SPEC §3.

Who may do what: root and ham's own uid may do anything. On the control socket (mode 0660,
ham's group) anyone else may do anything too, but whatever ham starts for them (attach by
command, restart, execute) runs as their uid (QNX 8.0's rule). On the client socket (0666) a
caller that is not privileged may: self-attach and detach itself; beat, publish states and
raise conditions for its own entities; register notifications (conditions with notify
pulse/signal and log actions) whose targets are its own processes, on any entity but in at
most a quarter of each room of one it does not own (model.FOREIGN_ROOM); add anything to,
and control or remove items of, entities it owns; read (handles, status).
A heartbeat for an entity comes from root, or from its uid and its own process or a
descendant of it.
"""

import errno
import os

from hamtools.core import hamproto as protocol, proc, words
from hamtools.core import hamconsts as q
from hamtools.hamd.model import (
    ADMIN_UIDS, FOREIGN_ROOM, GLOBAL, Action, Condition, Entity, FailAction, HamError, check_name, is_int64,
)


MAX_ENTITIES_PER_UID = 256  # for uids other than root and ham's own


def _int(args: dict, key: str, default=None) -> int:
    value = args.get(key, default)
    if not is_int64(value):
        raise HamError(errno.EINVAL, f"{key} must be a 64-bit integer")
    return value


def _text(args: dict, key: str, default=None) -> str:
    value = args.get(key, default)
    if not isinstance(value, str):
        raise HamError(errno.EINVAL, f"{key} must be a string")
    return value


def _settings(args: dict) -> dict:
    settings = args.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise HamError(errno.EINVAL, "settings must be a non-empty object")
    return settings


def _validated(apply, *args):
    """apply(*args), its ValueError (the configuration schema's) answered as EINVAL."""
    try:
        return apply(*args)
    except ValueError as bad:
        raise HamError(errno.EINVAL, str(bad)) from None


def _split(line: str) -> list[str]:
    try:
        argv = words.split(line)
    except ValueError as bad:
        raise HamError(errno.EINVAL, f"command line: {bad}") from None
    if not argv:
        raise HamError(errno.EINVAL, "empty command line")
    return argv


def _proc_uid(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


class _Root:
    """The configuration files' authority when ham builds their trees."""

    uid = gid = pid = 0
    control = True


_ROOT = _Root()


class Requests:
    def __init__(self, ham):
        self.ham = ham
        self.model = ham.model
        self.engine = ham.engine

    def handle(self, conn, op: str, args: dict):
        method = getattr(self, f"op_{op}", None)
        if method is None:
            raise HamError(errno.ENOSYS, f"unknown request {op!r}")
        return method(conn, args)

    # ---- authorisation ----------------------------------------------------------------

    def privileged(self, conn) -> bool:
        return conn.uid in ADMIN_UIDS

    def _may_administer(self, conn) -> bool:
        return self.privileged(conn) or conn.control

    def _owns(self, conn, entity: Entity) -> bool:
        return self._may_administer(conn) or (entity.kind != "global" and entity.uid == conn.uid)

    def _require(self, allowed: bool, what: str) -> None:
        if not allowed:
            raise HamError(errno.EPERM, f"not permitted: {what}")

    # ---- entities ---------------------------------------------------------------------

    def op_attach(self, conn, args):
        name = check_name(args.get("name"), "entity")
        pid, flags = _int(args, "pid", -1), _int(args, "flags", 0)
        # Everything is checked before the model changes: a refused attach leaves no trace.
        if pid > 0:
            ident = proc.ProcessId.of(pid)
            if ident is None:
                raise HamError(errno.ESRCH, f"no process {pid}")
            self._require(self._may_administer(conn) or _proc_uid(pid) == conn.uid,
                          f"attach process {pid} of another user")
        else:
            self._require(self._may_administer(conn), "attach by command on the client socket")
            argv = _split(_text(args, "line", ""))
        entity = self._claim(name, "attached", flags, conn)
        if pid > 0:
            entity.pid, entity.start = pid, ident.start
            self.ham.adopt(entity)
        else:
            entity.argv = argv
            try:
                self.engine.launcher.spawn(entity, argv, conn.uid, conn.gid)
            except OSError as err:
                self._unclaim(entity)
                raise HamError(err.errno or errno.EIO, f"{argv[0]}: {err.strerror}") from None
        return self._attached(entity)

    def op_attach_self(self, conn, args):
        name = check_name(args.get("name"), "entity")
        hp_ns, hpdl, hpdh = _int(args, "hp", 0), _int(args, "hpdl", 0), _int(args, "hpdh", 0)
        if hp_ns < 0 or hpdl < 0 or hpdh < 0 or (hpdl and hpdh and hpdl > hpdh):
            raise HamError(errno.EINVAL, "heartbeat: need hp >= 0 and hpdl <= hpdh")
        existing = self.model.entities.get(name)
        if existing is not None and existing.kind == "self" and existing.pid == conn.pid:
            entity = existing  # the same process again (its new connection after a restart of ham)
        else:
            entity = self._claim(name, "self", _int(args, "flags", 0), conn)
        entity.pid, entity.start = conn.pid, proc.start_time(conn.pid)
        entity.hb_period, entity.hpdl, entity.hpdh = hp_ns / 1e9, hpdl, hpdh
        conn.self_entities[name] = entity
        if entity.heartbeat:
            self.engine.hb_start(entity)
        return self._attached(entity, adopt=entity is not existing)

    def _claim(self, name: str, kind: str, flags: int, conn) -> Entity:
        """A new entity, or the placeholder of that name taken over (CONDATTACH fires)."""
        if flags & ~q.HENTITYKEEPONDEATH:
            raise HamError(errno.EINVAL, f"entity flags 0x{flags:x}")
        entity = self.model.entities.get(name)
        if entity is not None:
            if entity.kind != "placeholder":
                raise HamError(errno.EEXIST, f"entity {name!r} exists")
            self._require(self._owns(conn, entity), f"take over placeholder {name!r}")
            entity.kind, entity.flags = kind, entity.flags | flags
            entity.attach_fires = True
            return entity
        self._check_quota(conn)
        entity = Entity(name, kind, flags=flags, uid=conn.uid, gid=conn.gid,
                        created=self.ham.clock.time())
        self.model.add_entity(entity)
        return entity

    def _check_quota(self, conn) -> None:
        """An unprivileged uid owns at most MAX_ENTITIES_PER_UID entities: the tree (and the
        state file ham rewrites) cannot be grown without bound by one local user."""
        if self.privileged(conn):
            return
        owned = sum(e.uid == conn.uid for e in self.model.entities.values() if e.kind != "global")
        if owned >= MAX_ENTITIES_PER_UID:
            raise HamError(errno.ENOMEM, f"uid {conn.uid} has {MAX_ENTITIES_PER_UID} entities already")

    def _check_foreign_room(self, conn, entity: Entity, items, what: str) -> None:
        """A user adding to an entity it does not own may hold a quarter of the room there."""
        if self._owns(conn, entity):
            return
        room = FOREIGN_ROOM[what]
        if sum(item.uid == conn.uid for item in items) >= room:
            raise HamError(errno.ENOMEM, f"uid {conn.uid} has {room} {what}s of its own there already "
                                         f"(a quarter of the room on {entity.name!r})")

    def _unclaim(self, entity: Entity) -> None:
        if entity.attach_fires:  # it was a placeholder: it stays one
            entity.kind, entity.attach_fires, entity.argv = "placeholder", False, None
        else:
            self.model.entities.pop(entity.name, None)

    def _attached(self, entity: Entity, adopt: bool = True):
        entity.run = "running"
        if entity.attach_fires:
            entity.attach_fires = False
            self.engine.fire(entity, q.CONDATTACH)
        self.ham.log(2, f"Attach {entity.kind} entity: {entity.name} (pid {entity.pid})")
        self.ham.changed()
        return {"name": entity.name, "pid": entity.pid}

    def op_entity(self, conn, args):
        name = check_name(args.get("name"), "entity")
        flags = _int(args, "flags", 0)
        if flags & ~q.HENTITYKEEPONDEATH:
            raise HamError(errno.EINVAL, f"entity flags 0x{flags:x}")
        self._check_quota(conn)
        entity = Entity(name, "placeholder", flags=flags, uid=conn.uid, gid=conn.gid,
                        run="stopped", created=self.ham.clock.time())
        self.model.add_entity(entity)
        self.ham.changed()
        return {"name": name}

    def op_detach(self, conn, args):
        entity = self.model.entity(_text(args, "name"))
        if entity.kind in ("self", "global"):
            raise HamError(errno.EINVAL, f"{entity.name!r} is not an externally attached entity")
        self._require(self._owns(conn, entity), f"detach {entity.name!r}")
        self.engine.detached(entity)
        self.ham.forget(entity)
        return None

    def op_detach_self(self, conn, args):
        name = _text(args, "name")
        entity = conn.self_entities.pop(name, None)
        if entity is None:
            raise HamError(errno.EINVAL, f"{name!r} is not attached through this connection")
        self.engine.detached(entity)
        return None

    # ---- conditions, actions, fail lists ------------------------------------------------

    def op_condition(self, conn, args):
        ename, cname = self._split_path(_text(args, "path"), 2)
        entity = self.model.entity(ename)
        ctype, flags = _int(args, "type"), _int(args, "flags", 0)
        params = {}
        if ctype == q.CONDSTATE:
            params = {"from": _int(args, "from", 0), "to": _int(args, "to", 0)}
        elif ctype == q.CONDRAISE:
            params = {k: _int(args, k, 0) for k in ("rtype", "rclass", "rseverity")}
        elif flags & q.HCONDSTATEMASK:
            raise HamError(errno.EINVAL, "state-set flags belong to CONDSTATE conditions")
        self._check_foreign_room(conn, entity, entity.conditions.values(), "condition")
        self.model.add_condition(entity, Condition(cname, ctype, flags, params=params, uid=conn.uid))
        self.ham.changed()
        return None

    def op_action(self, conn, args):
        ename, cname, aname = self._split_path(_text(args, "path"), 3)
        entity, cond = self.model.entity(ename), self.model.condition(ename, cname)
        kind, flags = _text(args, "kind"), _int(args, "flags", 0)
        params = self._action_params(conn, entity, kind, args.get("params"))
        self._check_foreign_room(conn, entity, cond.actions.values(), "action")
        action = Action(aname, kind, params, flags, uid=conn.uid, gid=conn.gid)
        self.model.add_action(entity, cond, action)
        if flags & q.HACTIONDONOW and kind != "waitfor":
            self.engine.do_now(entity, cond, action)
        self.ham.changed()
        return None

    def op_fail(self, conn, args):
        ename, cname, aname, fname = self._split_path(_text(args, "path"), 4)
        entity = self.model.entity(ename)
        action = self.model.action(ename, cname, aname)
        kind = _text(args, "kind")
        params = self._action_params(conn, entity, kind, args.get("params"))
        self._check_foreign_room(conn, entity, action.fails.values(), "action-fail")
        self.model.add_fail(action, FailAction(fname, kind, params, conn.uid, conn.gid))
        self.ham.changed()
        return None

    def _action_params(self, conn, entity: Entity, kind: str, raw) -> dict:
        if not isinstance(raw, dict):
            raise HamError(errno.EINVAL, "params must be an object")
        params = dict(raw)
        if kind in ("notify_pulse", "notify_signal"):
            # ham sends as root: only root (or ham's uid) may aim it at another user's process,
            # whatever socket or entity the request comes through.
            # A target gone already is accepted from root, as QNX does: its notify fails when
            # it runs (and is pruned), whoever has the pid by then.
            target = _int(params, "pid")
            ident, owner = proc.ProcessId.of(target), _proc_uid(target)
            if not self.privileged(conn):
                if ident is None or owner is None:
                    raise HamError(errno.ESRCH, f"no process {target} to notify")
                self._require(owner == conn.uid, f"notify process {target} of uid {owner}")
            params["start"] = ident and ident.start  # pid reuse guard: only this very process
            if kind == "notify_signal":
                params.setdefault("code", 0)
        elif kind != "log":
            self._require(self._owns(conn, entity), f"add a {kind} action to {entity.name!r}")
        if kind == "execute":
            params.setdefault("timeout", 60)
        if kind in ("restart", "execute"):
            _split(_text(params, "line"))
        if kind == "log":
            params.setdefault("verbosity", 0)
            params.setdefault("prefix", 0)
        return params

    def op_remove(self, conn, args):
        parts = self._split_path(_text(args, "path"), None)
        entity = self.model.entity(parts[0])
        if len(parts) == 1:
            self._remove_entity(conn, entity)
            return None
        cond = self.model.condition(*parts[:2])
        if len(parts) == 2:
            self._require(self._owns(conn, entity), f"remove {args['path']!r}")
            for action in cond.actions.values():
                action.removed = True
            del entity.conditions[cond.name]
        else:
            action = self.model.action(*parts[:3])
            self._require(self._owns(conn, entity) or action.uid == conn.uid, f"remove {args['path']!r}")
            if len(parts) == 3:
                action.removed = True
                del cond.actions[action.name]
            elif action.fails.pop(parts[3], None) is None:
                raise HamError(errno.ENOENT, f"no action-fail {args['path']!r}")
        self.ham.changed()
        return None

    def _remove_entity(self, conn, entity: Entity) -> None:
        """Out of monitoring (SPEC §3's removal of an entity): a placeholder goes; a process
        goes on running, as after ham_detach (CONDDETACH fires)."""
        if entity.kind == "global":
            raise HamError(errno.EINVAL, "the global entity cannot be removed")
        self._require(self._owns(conn, entity), f"remove {entity.name!r}")
        if entity.service is not None and entity.service["source"] != self.ham.services.SET_SOURCE:
            raise HamError(errno.EINVAL, f"{entity.name!r} is a service of {entity.service['source']}: "
                                         "remove it there and reload")
        if entity.kind == "placeholder":
            self.engine.remove_entity(entity, why="removed")
        else:
            self.engine.detached(entity)
            self.ham.forget(entity)
        if entity.service is not None:
            self.ham.services.forget(entity.name)

    def op_control(self, conn, args):
        path = _text(args, "path")
        item = self.model.resolve(path)
        command, flags = _int(args, "command"), _int(args, "flags", 0)
        entity = self.model.entity(path.strip("/").split("/")[0])
        if command != q.HGETFLAGS:
            self._require(self._owns(conn, entity), f"control {path!r}")
        result = self.model.control(item, command, flags)
        if isinstance(item, Entity) and command in (q.HENABLE, q.HDISABLE) and item.heartbeat:
            self.engine.hb_healthy(item) if item.enabled else self.engine._hb_stop(item)
        self.ham.changed()
        return {"flags": result}

    def op_handle(self, conn, args):
        self.model.resolve(_text(args, "path"))
        return None

    def add_tree(self, entity: Entity, tree: dict) -> None:
        """A QNX condition tree from a configuration file (normalised by hamd.service)."""
        params = {k: tree[k] for k in ("from", "to", "rtype", "rclass", "rseverity") if k in tree}
        cond = self.model.add_condition(entity, Condition(tree["name"], tree["type"], tree["flags"], params=params))
        for raw in tree.get("actions", []):
            fixed = self._action_params(_ROOT, entity, raw["kind"], raw["params"])
            action = self.model.add_action(entity, cond, Action(raw["name"], raw["kind"], fixed, raw["flags"],
                                                               uid=entity.uid, gid=entity.gid))
            for fail in raw.get("fails", []):
                fixed = self._action_params(_ROOT, entity, fail["kind"], fail["params"])
                self.model.add_fail(action, FailAction(fail["name"], fail["kind"], fixed, entity.uid, entity.gid))

    def op_run(self, conn, args):
        """hamctl start|stop|restart ENTITY (services, and entities ham started by command)."""
        entity = self.model.entity(_text(args, "name"))
        command = _text(args, "command")
        self._require(self._owns(conn, entity), f"{command} {entity.name!r}")
        if entity.argv is None:
            raise HamError(errno.EINVAL, f"{entity.name!r} was not started by ham: it has no command")
        services = self.ham.services
        if command == "stop":
            services.operator_stop(entity)
        elif command == "start":
            if entity.pid is not None:
                raise HamError(errno.EBUSY, f"{entity.name!r} is running (pid {entity.pid})")
            services.operator_start(entity)
        elif command == "restart":
            services._restart_now(entity, why="hamctl restart")
        else:
            raise HamError(errno.EINVAL, f"unknown command {command!r}")
        return {"name": entity.name, "pid": entity.pid, "run": entity.run}

    def op_service_set(self, conn, args):
        """Restart policy and attributes of one entity (SPEC §3: every policy settable three
        ways); they apply from its next death or start."""
        entity = self.model.entity(_text(args, "name"))
        self._require(self._may_administer(conn), f"set the policy of {entity.name!r}")
        spec = _validated(self.ham.services.respec, entity, _settings(args))
        return {k: v for k, v in spec.items() if k not in ("conditions", "source")}

    def op_group_set(self, conn, args):
        """A service group's strategy and window (the third way to set them, besides a file)."""
        name = _text(args, "name")
        self._require(self._may_administer(conn), f"set the policy of group {name!r}")
        group = _validated(self.ham.services.set_group, name, _settings(args))
        return {k: v for k, v in group.items() if k != "source"}

    def op_reload(self, conn, args):
        self._require(self._may_administer(conn), "reload ham's configuration")
        return _validated(self.ham.reload)

    # ---- publishing ---------------------------------------------------------------------

    def _own_entity(self, conn, name: str) -> Entity:
        entity = self.model.entity(name)
        if entity.kind == "global":
            raise HamError(errno.EINVAL, "the global entity publishes nothing")
        self._require(self.privileged(conn) or entity.uid == conn.uid, f"publish for {name!r}")
        return entity

    def op_state(self, conn, args):
        entity = self._own_entity(conn, _text(args, "name"))
        return {"fired": self.engine.set_state(entity, _int(args, "state"))}

    def op_raise(self, conn, args):
        entity = self._own_entity(conn, _text(args, "name"))
        fired = self.engine.raised(entity, *(_int(args, k, 0) for k in ("rtype", "rclass", "rseverity")))
        return {"fired": fired}

    def op_heartbeat(self, conn, args):
        name = _text(args, "name")
        if not name and len(conn.self_entities) == 1:
            name = next(iter(conn.self_entities))
        entity = self.model.entity(name)
        if not self.may_beat(conn.pid, conn.uid, entity):
            raise HamError(errno.EPERM, f"pid {conn.pid} may not beat for {name!r}")
        self.engine.beat(entity)
        return None

    def may_beat(self, pid: int, uid: int, entity: Entity) -> bool:
        return uid == 0 or (uid == entity.uid and proc.is_descendant(pid, entity.pid))

    # ---- ham itself -------------------------------------------------------------------

    def op_status(self, conn, args):
        return protocol.Encoded(self.ham.status())

    def op_verbose(self, conn, args):
        op, value = _int(args, "op", q.VERBOSE_GET), _int(args, "value", 0)
        if value < 0 or op not in (q.VERBOSE_SET_INCR, q.VERBOSE_SET_DECR, q.VERBOSE_SET, q.VERBOSE_GET):
            raise HamError(errno.EINVAL, "bad verbosity request")
        if op != q.VERBOSE_GET:
            self._require(self._may_administer(conn), "change ham's verbosity")
            step = value or 1
            level = {q.VERBOSE_SET_INCR: self.engine.verbosity + step,
                     q.VERBOSE_SET_DECR: max(0, self.engine.verbosity - step),
                     q.VERBOSE_SET: value}[op]
            self.ham.set_verbosity(level)
        return {"verbosity": self.engine.verbosity}

    def op_reexec(self, conn, args):
        self._require(self._may_administer(conn), "re-execute ham")
        zipapp = args.get("zipapp")
        if zipapp is not None and (not isinstance(zipapp, str) or not zipapp.startswith("/")):
            raise HamError(errno.EINVAL, "reexec: the zipapp must be an absolute path")
        self.ham.reexec(zipapp)
        return {"pid": os.getpid()}

    def op_stop(self, conn, args):
        self._require(self._may_administer(conn), "stop ham")
        stop_entities = bool(args.get("stop_entities", False))
        self.ham.log(1, f"ham_stop from pid {conn.pid}: stopping the guardian, then ham"
                        + (" and the entities" if stop_entities else ""))
        self.ham.request_stop(stop_entities)
        return None

    @staticmethod
    def _split_path(path: str, parts: int | None) -> list[str]:
        names = path.strip("/").split("/")
        if (parts is not None and len(names) != parts) or not 1 <= len(names) <= 4:
            raise HamError(errno.EINVAL, f"bad path {path!r}")
        return [GLOBAL if n in ("*", GLOBAL) else n for n in names]
