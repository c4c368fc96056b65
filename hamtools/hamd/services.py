"""Entities configured as services: started in order, restarted by policy, reloaded by diff.

A service is an entity with a spec (the canonical dict of hamtools.hamd.service). As in s6,
what ham WANTS of it (entity.want: up or down) is kept apart from what it IS (entity.run):
only an operator (hamctl start/stop, a reload) and the end of its policy (restart = never or
on-failure, on_limit = stop) change the want; deaths, backoffs and readiness change the state.
A service wanted up and stopped is owed a start, which it gets, in AFTER order, once every
service it names is running and ready (at once, after a delay, or when a path appears).

On top of whatever QNX conditions it has, ham applies the spec's policy when it dies
(policy.decide: restart now, after a backoff, or not; at the intensity limit the on_limit
action, never a silent dead end), the group's strategy (cascade, one_for_all, rest_for_one:
the others are stopped and owed a start, so they too come back in order), and safe mode.
The policy's memory (restart history, a pending backoff) is saved with the entity and
resumed by the next ham. Stopping goes in reverse order. A reload starts what was added,
stops what was removed, restarts what changed, retries what failed, and leaves the rest
alone (same pids).
"""

import os
import _signal

from hamtools.core import bootid, proc
from hamtools.hamd import notify, policy
from hamtools.hamd.model import Entity

READY_POLL = 0.05  # seconds between looks for a readiness path, only while one is awaited
SET_SOURCE = "hamctl set"  # the source of a service or group made through the API, not a file


class Services:
    SET_SOURCE = SET_SOURCE

    def __init__(self, ham):
        self.ham = ham
        self.loop = ham.loop
        self.clock = ham.loop.clock
        self.log = ham.log
        self.boot = bootid.boot_id()
        self.groups: dict[str, dict] = dict(ham.saved_groups)  # name -> settings (persisted)
        self.group_state: dict[str, policy.GroupState] = {}
        self.histories: dict[str, policy.History] = {}
        self.backoffs: dict[str, dict] = {}  # name -> {"until", "delay", "safe"}: pending
        self.waiting: dict[str, float | None] = {}  # restarts owed until the predecessors are
        #                                            ready: name -> its safe-mode uptime
        self.stopping: set[str] = set()  # stops ham asked for, under way (still running)
        self.timers: dict[str, object] = {}  # name -> pending backoff/readiness timer
        self.killing: dict[str, object] = {}  # name -> the kill of a hung worker (child.Stopping)
        self.order: list[str] = []  # start order of the services
        self._capture = None  # made on the first service whose output is captured
        self._set_order(self._specs(api=False))

    # ---- configuration ----------------------------------------------------------------

    def apply(self, specs: list[dict], groups: dict, trees: list[dict] = ()) -> dict:
        """Make the running set match the configuration; returns what changed, by kind."""
        from hamtools.hamd import filetrees
        from hamtools.hamd.config import diff

        current = {e.name: e for e in self.ham.model.entities.values()
                   if e.service is not None and e.service["source"] != SET_SOURCE}
        for spec in specs:  # before anything changes: a name an API-made entity holds
            other = self.ham.model.entities.get(spec["name"])
            if other is not None and other.name not in current:
                raise ValueError(f"{spec['source']}: service {spec['name']!r}: an entity of that "
                                 "name already exists (made through the API or hamctl)")
        filetrees.check(self.ham.model, trees)
        # A group the files mention gets what they say (its defaults if none defines it);
        # one only the API knows keeps what the API set.
        self.groups = {**{name: group for name, group in self.groups.items()
                          if group["source"] == SET_SOURCE and name not in groups}, **groups}
        filetrees.apply(self.ham, trees)  # global conditions first: they see the starts
        wanted = {s["name"]: s for s in specs}
        added, removed, changed, unchanged = (
            [spec["name"] for spec in kind] for kind in diff([e.service for e in current.values()], specs))
        for name in removed:
            entity = current[name]
            self.stop(entity, then=lambda entity=entity: self._forget(entity, "removed from the configuration"))
        for name in changed:
            entity = current[name]
            self._reconfigure(entity, wanted[name])
            if entity.want == "up":
                self._restart_now(entity, why="its configuration changed")
        for name in unchanged:  # a reload retries what failed (on_limit = log, a failed start)
            entity = current[name]
            if entity.run == "failed" and entity.want == "up":
                self.histories[name] = policy.History()
                entity.run = "stopped"
        self._set_order(specs)
        for name in self.order:
            if name in added:
                self._add(wanted[name])
        self.start_ready()
        self.ham.changed()
        return {"added": added, "removed": removed, "changed": changed, "unchanged": unchanged}

    def _specs(self, api: bool) -> list[dict]:
        return [e.service for e in self.ham.model.entities.values()
                if e.service is not None and (e.service["source"] == SET_SOURCE) == api]

    def _set_order(self, file_specs: list[dict]) -> None:
        """The files' services in their order (each after what it names in AFTER), then the
        API's, in the order they were made."""
        self.order = _start_order(file_specs + self._specs(api=True))

    def _add(self, spec: dict) -> None:
        entity = Entity(spec["name"], "attached", run="stopped", created=self.clock.time())
        self._configure(entity, spec)
        self.ham.model.add_entity(entity)
        for tree in spec["conditions"]:
            self.ham.requests.add_tree(entity, tree)

    @staticmethod
    def _configure(entity: Entity, spec: dict) -> None:
        entity.service, entity.argv = spec, spec["argv"]
        entity.uid, entity.gid = spec["uid"] or 0, spec["gid"] or 0
        entity.hb_period, entity.hpdl, entity.hpdh = spec["heartbeat"], spec["missed_low"], spec["missed_high"]

    def _reconfigure(self, entity: Entity, spec: dict) -> None:
        """A changed file entry: the new spec, and its QNX conditions rebuilt (by name: hamctl
        set leaves a spec without them, the tree keeps them)."""
        names = {tree["name"] for tree in entity.service["conditions"] + spec["conditions"]}
        for name in names & entity.conditions.keys():
            for action in entity.conditions.pop(name).actions.values():
                action.removed = True
        self._configure(entity, spec)
        for tree in spec["conditions"]:
            self.ham.requests.add_tree(entity, tree)

    def respec(self, entity: Entity, settings: dict) -> dict:
        """hamctl set / ham_service_set: the entity's spec with settings applied, validated by
        the configuration's own schema. A service from a file keeps its source (a reload then
        brings the file's values back); any other entity becomes a service of the API's."""
        from hamtools.hamd.service import default_group, validate

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
        new = entity.service is None
        entity.service = spec
        entity.uid, entity.gid = spec["uid"] or 0, spec["gid"] or 0
        if spec["group"] is not None and spec["group"] not in self.groups:
            self.groups[spec["group"]] = default_group(SET_SOURCE)
        if new:
            self.order.append(entity.name)
            if entity.pid is not None:  # already running, started by the QNX API: ready as it is
                entity.ready = True
        self.ham.changed()
        return spec

    def set_group(self, name: str, settings: dict) -> dict:
        """hamctl set-group / ham_group_set: a group's strategy and window, validated by the
        configuration's schema. A group the files mention gets their values back at the next
        reload; one only the API knows keeps these."""
        from hamtools.hamd.service import validate_groups

        group = self.groups.get(name)
        if group is None:
            raise ValueError(f"no group {name!r} (a service names its group first)")
        raw = {key: value for key, value in group.items() if key != "source"}
        raw.update(settings)
        self.groups[name] = validate_groups({name: raw}, {name: group["source"]})[name]
        self.ham.changed()
        return self.groups[name]

    # ---- resuming what an earlier ham left ----------------------------------------------

    def resume(self, entity: Entity, running: bool) -> None:
        """At ham's start, for a service in the saved state (running: re-adopted; a service
        that died while no ham watched is reported to died() next): its policy's memory back,
        then it goes on where the last ham left it."""
        history, left, safe = policy.restored(entity.policy, self.boot, self.clock.monotonic())
        self.histories[entity.name] = history
        entity.episode = False  # its death, if any, is the policy's to handle
        if running:
            entity.ready = True  # it ran before this ham: its readiness is established
            if entity.want == "down":  # a stop cut short by the last ham's end
                self.stop(entity)
        elif entity.run == "backoff":
            # no saved deadline (a state file older than this ham): restart now, never stall
            self._backoff(entity, 0.0 if left is None else left, safe)

    def remember(self) -> None:
        """Before a save: each service's restart history and pending backoff into its entity."""
        for entity in self.ham.model.entities.values():
            if entity.service is not None:
                entity.policy = policy.saved(self._history(entity), self.backoffs.get(entity.name), self.boot)

    def _history(self, entity: Entity) -> policy.History:
        return self.histories.setdefault(entity.name, policy.History())

    # ---- starting, in order, with readiness ---------------------------------------------

    def start_ready(self) -> None:
        """Start every service owed a start whose predecessors are ready."""
        for name in self.order:
            entity = self.ham.model.entities.get(name)
            if (entity is None or entity.service is None or entity.want != "up" or entity.run != "stopped"
                    or entity.pid is not None or name in self.stopping or not self._after_ready(entity)):
                continue
            if name in self.waiting:
                self._restart(entity, self.waiting[name])
            else:
                self.start(entity)

    def _after_ready(self, entity: Entity) -> bool:
        return all(self._ready(name) for name in (entity.service or {}).get("after", ()))

    def _ready(self, name: str) -> bool:
        entity = self.ham.model.entities.get(name)
        return (entity is not None and entity.run == "running" and entity.ready
                and name not in self.stopping)

    def operator_start(self, entity: Entity) -> None:
        """hamctl start: ham wants it up again, now; an operator's start forgives the past."""
        entity.want = "up"
        self._cancel(entity.name)
        self.waiting.pop(entity.name, None)
        if entity.service is not None:
            self.histories[entity.name] = policy.History()
        self.start(entity)

    def operator_stop(self, entity: Entity) -> None:
        """hamctl stop: ham wants it down, until hamctl start (a reload does not bring it back)."""
        entity.want = "down"
        self.stop(entity)

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
            policy.started(self._history(entity), self.clock.monotonic(), restarted)
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

        self.ham.persist_before_spawn(entity)
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
            self.start_ready()

    def _timer(self, entity: Entity, delay: float, callback) -> None:
        self._cancel(entity.name)
        self.timers[entity.name] = self.loop.call_later(delay, callback)

    def _cancel(self, name: str) -> None:
        """No timer for it any more: no readiness wait, no backoff."""
        self.backoffs.pop(name, None)
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
        if entity.want == "down":  # its stop was cut short by a restart of ham: it stays down
            entity.run = "stopped"
            self.ham.changed()
            return
        outcome = policy.CLEAN if status is not None and status.code == 0 else str(status or "died")
        decision = policy.decide(entity.service, self._history(entity), self.clock.monotonic(), outcome)
        self.ham.engine.journal(entity.name, None, "policy", note=decision.why,
                                restart=decision.restart, delay=decision.delay, limit=decision.limit)
        if decision.limit:
            self._at_limit(entity, decision.why)
        elif not decision.restart:
            entity.run = "dead" if outcome != policy.CLEAN else "stopped"
            entity.want = "down"  # its policy is done with it (s6's "once"): hamctl start revives it
        else:
            self._group(entity)
            self._restart_later(entity, decision)
        self.ham.changed()

    def _restart_later(self, entity: Entity, decision: policy.Decision) -> None:
        safe = decision.uptime if decision.safe else None
        if decision.delay <= 0:
            self._restart(entity, safe)
            return
        self._backoff(entity, decision.delay, safe, delay=decision.delay)

    def _backoff(self, entity: Entity, left: float, safe: float | None, delay: float | None = None) -> None:
        entity.run = "backoff"
        self.log(1, f"{entity.name}: restart in {left:g} s (backoff)")
        self._timer(entity, left, lambda: self._restart(entity, safe))
        self.backoffs[entity.name] = {"until": self.clock.monotonic() + left,
                                      "delay": left if delay is None else delay, "safe": safe}

    def _restart(self, entity: Entity, safe_uptime: float | None) -> None:
        """Start it again (a restart: counted, in safe mode if due) if ham still wants it up,
        once its predecessors are ready; until then it waits, stopped, owed a start."""
        if (self.ham.model.entities.get(entity.name) is not entity or entity.pid is not None
                or entity.want != "up"):
            return
        self._cancel(entity.name)
        if not self._after_ready(entity):
            entity.run = "stopped"
            self.waiting[entity.name] = safe_uptime
            self.log(2, f"{entity.name}: waiting for {', '.join(entity.service['after'])} to be ready")
            self.ham.changed()
            return
        self.waiting.pop(entity.name, None)
        entity.restarts += 1
        entity.restarted = self.clock.time()
        self.start(entity, restarted=True, safe_uptime=safe_uptime)

    def _at_limit(self, entity: Entity, why: str) -> None:
        spec = entity.service
        action = spec["on_limit"]
        entity.run = "failed"
        self.log(0, f"{entity.name}: restart limit reached ({why}): {action}")
        if action == "stop":  # ham gives up on it: down until hamctl start, whatever reloads
            entity.want = "down"
        elif action == "exec":
            try:
                self.ham.launcher.spawn(None, ["/bin/sh", "-c", spec["on_limit_command"]], entity.uid, entity.gid,
                                        env={"HAM_ENTITY_FAILED": entity.name})
            except OSError as err:
                self.log(0, f"{entity.name}: on_limit command: {err.strerror}")
        elif action == "escalate":  # the configuration makes sure it has a group
            members = self._members(spec["group"])
            self.log(0, f"{entity.name}: escalating to group {spec['group']}: restarting {', '.join(members)}")
            for name in members:
                other = self.ham.model.entities[name]
                if other.want == "up":
                    self.histories[name] = policy.History()
                    self._restart_now(other, why=f"group {spec['group']} escalation")
        elif action == "reboot":
            self._reboot(entity)
        # "log": it stays failed and wanted up: hamctl start or the next reload retries it

    def _reboot(self, entity: Entity) -> None:
        from hamtools.core import power

        self.log(0, f"{entity.name}: rebooting, as its on_limit says")
        self.ham.engine.journal(entity.name, None, "reboot")
        self.ham.save()
        try:
            power.reboot()
        except OSError as err:  # not root, or a container: ham goes on, the service failed
            self.log(0, f"{entity.name}: reboot refused ({err.strerror}): it stays failed")
            self.ham.engine.journal(entity.name, None, "reboot refused", note=err.strerror)

    def _group(self, entity: Entity) -> None:
        name = entity.service["group"]
        if not name:
            return
        settings = self.groups.get(name) or {"strategy": "cascade", "window": 60.0}
        state = self.group_state.setdefault(name, policy.GroupState())
        others = policy.group_restarts(settings["strategy"], settings["window"], state,
                                       self.clock.monotonic(), entity.name, self._members(name))
        for other in others:
            member = self.ham.model.entities[other]
            if member.want == "up":
                self._restart_now(member, why=f"{entity.name} failed ({settings['strategy']} in group {name})")

    def _members(self, group: str) -> list[str]:
        return [n for n in self.order if (e := self.ham.model.entities.get(n)) is not None
                and e.service is not None and e.service["group"] == group]

    def _restart_now(self, entity: Entity, why: str) -> None:
        """Stop it (stop signal, then SIGKILL) and start it again once it is gone and its
        predecessors are ready."""
        self.log(1, f"Restarting {entity.name}: {why}")
        entity.want = "up"
        self.stop(entity, then=lambda: self._restart(entity, None))

    # ---- stopping -----------------------------------------------------------------------

    def stop(self, entity: Entity, then=None) -> None:
        """Stop its process: the stop signal to its group, SIGKILL after stop_timeout
        (hamd.child); then() once it is gone. Until then it is running (and not ready). Our own
        exit callback runs before death handling, so a stop ham asked for is no death."""
        self._cancel(entity.name)
        self.waiting.pop(entity.name, None)
        entity.ready = False
        pid = entity.pid
        if pid is None:
            entity.run = "stopped"
            self.ham.changed()
            if then:
                then()
            return
        if entity.name in self.stopping:  # asked already: then() too, once it is gone
            if then:
                self.ham.after_exit(pid, then)
            return
        from hamtools.hamd import child

        self.stopping.add(entity.name)
        stopping = child.stop(pid, entity.service or _plain(entity), self.loop, lambda: None, start=entity.start)
        if stopping is None:  # gone, and its exit seen already (while ham stops that is no death)
            self.ham.forget(entity)
            entity.pid = entity.start = None
            self._stopped(entity, then)
            return
        self.ham.after_exit(pid, lambda: (stopping.cancel(), self._stopped(entity, then)))

    def _stopped(self, entity: Entity, then) -> None:
        self.stopping.discard(entity.name)
        entity.run = "stopped"
        self.ham.changed()
        if then:
            then()

    def _forget(self, entity: Entity, why: str) -> None:
        self.ham.engine.remove_entity(entity, why=why)
        self.forget(entity.name)

    def forget(self, name: str) -> None:
        """The entity left the tree: nothing of it stays here."""
        self._cancel(name)
        self.waiting.pop(name, None)
        self.histories.pop(name, None)
        if name in self.order:
            self.order.remove(name)

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
            "stop_timeout": 10.0, "safe_arg": None, "after": []}


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
