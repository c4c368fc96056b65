"""Entities configured as services: started in order, restarted by policy, reloaded by diff.

A service is an entity with a spec (the canonical dict of hamtools.hamd.service). On top of
whatever QNX conditions it has, ham applies the spec's policy when it dies (policy.decide:
restart now, after a backoff, or not; at the intensity limit the on_limit action, never a
silent dead end), the group's strategy (cascade, one_for_all, rest_for_one), and safe mode.
Start order follows AFTER, each start waiting for its predecessors to be ready (at once,
after a delay, or when a path appears); stopping goes in reverse order. A reload starts what
was added, stops what was removed, restarts what changed, and leaves the rest alone (same pids).
"""

import os
import _signal

from hamtools.core import proc
from hamtools.hamd import notify, policy
from hamtools.hamd.model import Entity

READY_POLL = 0.05  # seconds between looks for a readiness path, only while one is awaited
SET_SOURCE = "hamctl set"  # the source of a service made through the API, not a file


class Services:
    def __init__(self, ham):
        self.ham = ham
        self.loop = ham.loop
        self.clock = ham.loop.clock
        self.log = ham.log
        self.groups: dict[str, dict] = {}
        self.group_state: dict[str, policy.GroupState] = {}
        self.histories: dict[str, policy.History] = {}
        self.timers: dict[str, object] = {}  # name -> pending backoff/readiness timer
        self.killing: dict[str, object] = {}  # name -> the kill of a hung worker (child.Stopping)
        self.order: list[str] = []  # start order of the configured services
        self._capture = None  # made on the first service whose output is captured

    # ---- configuration ----------------------------------------------------------------

    def apply(self, specs: list[dict], groups: dict) -> dict:
        """Make the running set match specs; returns what changed, by kind."""
        from hamtools.hamd.config import diff

        self.groups = groups
        current = {e.name: e for e in self.ham.model.entities.values()
                   if e.service is not None and e.service["source"] != SET_SOURCE}
        for spec in specs:  # before anything changes: a name an API-made entity holds
            other = self.ham.model.entities.get(spec["name"])
            if other is not None and other.name not in current:
                raise ValueError(f"{spec['source']}: service {spec['name']!r}: an entity of that "
                                 "name already exists (made through the API or hamctl)")
        wanted = {s["name"]: s for s in specs}
        added, removed, changed, unchanged = (
            [spec["name"] for spec in kind] for kind in diff([e.service for e in current.values()], specs))
        for name, entity in current.items():
            if entity.pid is not None and entity.run == "running":
                entity.ready = True  # running before this ham started: readiness established
        for name in removed:
            self.stop(current[name], remove=True)
        for name in changed:
            current[name].service = wanted[name]
            self._restart_now(current[name], why="its configuration changed")
        self.order = _start_order(specs)
        for name in self.order:
            if name in added:
                self._add(wanted[name])
        self._start_ready()
        self.ham.changed()
        return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}

    def _add(self, spec: dict) -> None:
        entity = Entity(spec["name"], "attached", uid=spec["uid"] or 0, gid=spec["gid"] or 0,
                        run="stopped", created=self.clock.time())
        entity.service = spec
        entity.argv = spec["argv"]
        entity.hb_period, entity.hpdl, entity.hpdh = spec["heartbeat"], spec["missed_low"], spec["missed_high"]
        self.ham.model.add_entity(entity)
        for tree in spec["conditions"]:
            self.ham.requests.add_tree(entity, tree)

    def respec(self, entity: Entity, settings: dict) -> dict:
        """hamctl set / ham_service_set: the entity's spec with settings applied, validated by
        the configuration's own schema. A service from a file keeps its source (a reload then
        brings the file's values back); any other entity becomes a service of the API's."""
        from hamtools.hamd.service import validate

        if entity.argv is None:
            raise ValueError(f"{entity.name!r} was not started by ham: it has no command")
        if entity.service is None:
            raw, source = {"name": entity.name, "argv": entity.argv}, SET_SOURCE
        else:
            raw = {k: v for k, v in entity.service.items() if k not in ("source", "conditions") and v is not None}
            raw["rlimits"] = {k: ["unlimited" if x is None else x for x in v] for k, v in raw["rlimits"].items()}
            source = entity.service["source"]
        for key in ("name", "argv", "command", "condition", "conditions"):
            if key in settings:
                raise ValueError(f"{key}: cannot be changed here")
        raw.update(settings)
        spec = validate(raw, source)
        spec["conditions"] = []  # an entity's QNX conditions live in its tree, not its spec
        spec["source"] = source
        entity.service = spec
        entity.uid, entity.gid = spec["uid"] or 0, spec["gid"] or 0
        self.ham.changed()
        return spec

    # ---- starting, in order, with readiness ---------------------------------------------

    def _start_ready(self) -> None:
        """Start every stopped service whose predecessors are ready."""
        for name in self.order:
            entity = self.ham.model.entities.get(name)
            if entity is None or entity.run != "stopped" or entity.service is None:
                continue
            if all(self._ready(after) for after in entity.service["after"]):
                self.start(entity)

    def _ready(self, name: str) -> bool:
        entity = self.ham.model.entities.get(name)
        return entity is not None and entity.run == "running" and getattr(entity, "ready", False)

    def start(self, entity: Entity, restarted: bool = False, safe_uptime: float | None = None) -> None:
        spec = entity.service or _plain(entity)
        argv, env = list(spec["argv"]), dict(spec["env"])
        if safe_uptime is not None:
            argv, extra = policy.safe_mode(spec, argv, safe_uptime)
            env.update(extra)
        try:
            self._spawn(entity, argv, env)
        except OSError as err:
            entity.run = "failed"
            self.log(0, f"cannot start {entity.name}: {argv[0]}: {err.strerror}")
            self.ham.engine.journal(entity.name, None, "start failed", note=err.strerror)
            self.ham.changed()
            return
        entity.run, entity.ready = "running", False
        if entity.service is not None:
            policy.started(self.histories.setdefault(entity.name, policy.History()),
                           self.clock.monotonic(), restarted)
        if entity.heartbeat:
            self.ham.engine.hb_start(entity)
        self.log(1, f"Started service {entity.name} (pid {entity.pid})"
                    + (" in safe mode" if safe_uptime is not None else ""))
        self._await_ready(entity)
        self.ham.changed()

    def _spawn(self, entity: Entity, argv: list[str], env: dict) -> None:
        """A service with every attribute of its spec (hamd.child), its output captured
        (hamd.capture); an entity ham started by plain command, as the QNX API does."""
        if entity.service is None:
            self.ham.launcher.spawn(entity, argv, entity.uid, entity.gid, env=env)
            return
        from hamtools.hamd import child

        extra = {}
        argv = notify.prepare(argv, extra, self.ham.notify.path, entity)
        spec = {**entity.service, "argv": argv, "env": {**entity.service["env"], **env}}
        streams = self.capture.open(spec)
        try:
            pid = child.start(spec, extra, self.log, stdout=streams.stdout, stderr=streams.stderr)
        except (OSError, ValueError):
            streams.abandon()
            raise
        streams.attach(pid)
        entity.pid, entity.start, entity.spawned = pid, proc.start_time(pid), True

    @property
    def capture(self):
        if self._capture is None:
            from hamtools.hamd.capture import Capture

            self._capture = Capture(self.loop, self.log)
        return self._capture

    def _await_ready(self, entity: Entity) -> None:
        ready = (entity.service or _plain(entity))["ready"]
        if ready.startswith("delay:"):
            self._timer(entity, float(ready[6:]), lambda: self._became_ready(entity))
        elif ready.startswith("path:"):
            self._poll_path(entity, ready[5:])
        elif ready != "notify":  # "none"; notify: READY=1 calls notified_ready
            self._became_ready(entity)

    def _poll_path(self, entity: Entity, path: str) -> None:
        if os.path.exists(path):
            self._became_ready(entity)
        elif entity.run == "running":
            self._timer(entity, READY_POLL, lambda: self._poll_path(entity, path))

    def notified_ready(self, entity: Entity) -> None:
        """READY=1 from the service (hamd.notify)."""
        self._became_ready(entity)

    def _became_ready(self, entity: Entity) -> None:
        if self.ham.model.entities.get(entity.name) is entity and entity.run == "running":
            entity.ready = True
            self._start_ready()

    def _timer(self, entity: Entity, delay: float, callback) -> None:
        self._cancel(entity.name)
        self.timers[entity.name] = self.loop.call_later(delay, callback)

    def _cancel(self, name: str) -> None:
        timer = self.timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    # ---- deaths -------------------------------------------------------------------------

    def hung(self, entity: Entity) -> None:
        """Seed 001's hung worker (MISSEDHIGH on a service): its kill signal (SIGABRT by default,
        so it dumps core) to its process group, SIGKILL after its grace period; once it is really
        dead its death goes through the policy like any other. Until then ham does not feed the
        hardware watchdog (hamd.hwdog), so a worker that cannot be killed resets the board."""
        if entity.name in self.killing or entity.pid is None:
            return
        from hamtools.hamd import child

        spec = entity.service
        self.log(0, f"{entity.name}: hung (pid {entity.pid}): {proc.signal_name(spec['kill_signal'])}, "
                    f"SIGKILL after {spec['grace']:g} s")
        self.ham.engine.journal(entity.name, None, "hung", note=proc.signal_name(spec["kill_signal"]))
        self.ham.kill_pending(entity, True)
        kill = {"stop_signal": spec["kill_signal"], "stop_timeout": spec["grace"]}
        self.killing[entity.name] = child.stop(entity.pid, kill, self.loop, lambda: None, start=entity.start)

    def died(self, entity: Entity, status) -> None:
        """After its conditions fired: the policy decides what happens next."""
        if entity.name in self.killing:  # a hung worker, now really dead
            killing = self.killing.pop(entity.name)
            if killing is not None:
                killing.cancel()
            self.ham.kill_pending(entity, False)
        self._cancel(entity.name)
        entity.ready = False
        if entity.run == "stopping":  # we asked for it
            entity.run = "stopped"
            return
        outcome = policy.CLEAN if status is not None and status.code == 0 else str(status or "died")
        history = self.histories.setdefault(entity.name, policy.History())
        decision = policy.decide(entity.service, history, self.clock.monotonic(), outcome)
        self.ham.engine.journal(entity.name, None, "policy", note=decision.why,
                                restart=decision.restart, delay=decision.delay, limit=decision.limit)
        if decision.limit:
            self._at_limit(entity, decision.why)
        elif not decision.restart:
            entity.run = "dead" if outcome != policy.CLEAN else "stopped"
        else:
            self._group(entity)
            self._restart_later(entity, decision)
        self.ham.changed()

    def _restart_later(self, entity: Entity, decision: policy.Decision) -> None:
        safe = decision.uptime if decision.safe else None
        if decision.delay <= 0:
            self._restart(entity, safe)
            return
        entity.run = "backoff"
        self.log(1, f"{entity.name}: restart in {decision.delay:g} s (backoff)")
        self._timer(entity, decision.delay, lambda: self._restart(entity, safe))

    def _restart(self, entity: Entity, safe_uptime: float | None) -> None:
        if self.ham.model.entities.get(entity.name) is not entity or entity.pid is not None:
            return
        entity.restarts += 1
        entity.restarted = self.clock.time()
        self.start(entity, restarted=True, safe_uptime=safe_uptime)

    def _at_limit(self, entity: Entity, why: str) -> None:
        spec = entity.service
        action = spec["on_limit"]
        entity.run = "failed"
        self.log(0, f"{entity.name}: restart limit reached ({why}): {action}")
        if action == "exec" and spec["on_limit_command"]:
            try:
                self.ham.launcher.spawn(None, ["/bin/sh", "-c", spec["on_limit_command"]], entity.uid, entity.gid,
                                        env={"HAM_ENTITY_FAILED": entity.name})
            except OSError as err:
                self.log(0, f"{entity.name}: on_limit command: {err.strerror}")
        elif action == "escalate" and spec["group"]:
            members = self._members(spec["group"])
            self.log(0, f"{entity.name}: escalating to group {spec['group']}: restarting {', '.join(members)}")
            for name in members:
                other = self.ham.model.entities[name]
                self.histories.pop(name, None)
                self._restart_now(other, why=f"group {spec['group']} escalation")
        elif action == "reboot":
            from hamtools.core import power

            self.log(0, f"{entity.name}: rebooting, as its on_limit says")
            self.ham.save()
            power.reboot()
        # "log" and "stop": it stays failed, logged and journaled; hamctl start brings it back

    def _group(self, entity: Entity) -> None:
        name = entity.service["group"]
        if not name:
            return
        settings = self.groups.get(name, {"strategy": "cascade", "window": 60.0})
        state = self.group_state.setdefault(name, policy.GroupState())
        others = policy.group_restarts(settings["strategy"], settings["window"], state,
                                       self.clock.monotonic(), entity.name, self._members(name))
        for other in others:
            self._restart_now(self.ham.model.entities[other],
                              why=f"{entity.name} failed ({settings['strategy']} in group {name})")

    def _members(self, group: str) -> list[str]:
        return [n for n in self.order if (e := self.ham.model.entities.get(n)) is not None
                and e.service is not None and e.service["group"] == group]

    def _restart_now(self, entity: Entity, why: str) -> None:
        """Stop it (stop signal, then SIGKILL) and start it again once it is gone."""
        self.log(1, f"Restarting {entity.name}: {why}")
        if entity.pid is None:
            self._restart(entity, None)
            return
        self.stop(entity, then=lambda: self._restart(entity, None))

    # ---- stopping -----------------------------------------------------------------------

    def stop(self, entity: Entity, remove: bool = False, then=None) -> None:
        self._cancel(entity.name)
        spec = entity.service or _plain(entity)
        pid = entity.pid
        if pid is None:
            entity.run = "stopped"
            if remove:
                self.ham.engine.remove_entity(entity, why="removed from the configuration")
            elif then:
                then()
            return
        from hamtools.hamd import child

        entity.run = "stopping"
        # The stop signal to its group, SIGKILL after stop_timeout (hamd.child); our own exit
        # callback runs before death handling, so a stop we asked for is not a death.
        stopping = child.stop(pid, spec, self.loop, lambda: None, start=entity.start)
        self.ham.after_exit(pid, lambda: (stopping and stopping.cancel(), self._stopped(entity, remove, then)))

    def _stopped(self, entity: Entity, remove: bool, then) -> None:
        entity.run = "stopped"
        if remove:
            self.ham.engine.remove_entity(entity, why="removed from the configuration")
        elif then:
            then()

    def stop_all(self, then) -> None:
        """Reverse start order (SPEC §3): each one gone before the next is asked; then `then`."""
        pending = [e for n in reversed(self.order)
                   if (e := self.ham.model.entities.get(n)) is not None and e.service is not None]

        def next_one() -> None:
            if not pending:
                then()
                return
            self.stop(pending.pop(0), then=next_one)

        next_one()


def _plain(entity: Entity) -> dict:
    """What start/stop need for an entity ham started by command without a service spec."""
    return {"argv": entity.argv, "env": {}, "ready": "none", "stop_signal": _signal.SIGTERM,
            "stop_timeout": 10.0, "safe_arg": None}


def _start_order(specs: list[dict]) -> list[str]:
    """Configuration order, each service after everything it names in AFTER."""
    by_name = {s["name"]: s for s in specs}
    order: list[str] = []

    def visit(name: str, trail: tuple) -> None:
        if name in order or name not in by_name or name in trail:
            return
        for before in by_name[name]["after"]:
            visit(before, trail + (name,))
        order.append(name)

    for spec in specs:
        visit(spec["name"], ())
    return order
