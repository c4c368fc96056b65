"""What ham does when something happens: conditions fire, their actions run, QNX's rules prune.

Execution model (SPEC §3): NOWAIT conditions share one FIFO queue, each INDEPENDENT condition
has its own, all others share one; a condition's actions run FIFO. Queues are not threads: a
job is a generator on ham's one event loop that yields only when it must wait (a waitfor, an
execute's exit, a restart's start window), so a waitfor in one queue never delays another.

Pruning (QNX): a failed action goes unless HACTIONKEEPONFAIL (its fail list runs first;
HACTIONBREAKONFAIL skips the rest of the list); after a restart, conditions without
HREARMAFTERRESTART go, and non-rearmed actions run once more at most; a condition emptied by
pruning goes unless HCONDKEEPONEMPTY; an entity that dies and is not restarted goes, with
everything under it, unless HENTITYKEEPONDEATH.
"""

import math
import os
import _signal

from hamtools.core import words
from hamtools.core.proc import ExitStatus
from hamtools.core import hamconsts as q
from hamtools.hamd.model import DEATH_TYPES, Action, Condition, Entity, Model

# Death by one of these is "abnormal" (QNX's dumper signal set): CONDABNORMALDEATH as well.
CORE_SIGNALS = {_signal.SIGABRT, _signal.SIGBUS, _signal.SIGFPE, _signal.SIGILL, _signal.SIGQUIT,
                _signal.SIGSEGV, _signal.SIGSYS, _signal.SIGTRAP, _signal.SIGXCPU, _signal.SIGXFSZ}
START_WINDOW = 1.0  # seconds a restarted process must live for the restart to count
PATH_POLL = 0.05  # waitfor PATH without inotify: re-check interval, only while it is pending


# ---- what a job may wait for ------------------------------------------------------------

class Sleep:
    def __init__(self, seconds: float):
        self.seconds = seconds


class ChildExit:
    """Resume with the ExitStatus (or None if unknown) when pid exits, or False at timeout.
    park: the job steps out of its queue while it waits (a restart's start window holds the
    rest of its own condition's actions, never the other conditions sharing the queue)."""

    def __init__(self, pid: int, timeout: float, park: bool = False):
        self.pid = pid
        self.timeout = timeout
        self.park = park


class PathAppears:
    """Resume with True once path exists, False at timeout."""

    def __init__(self, path: str, timeout: float):
        self.path = path
        self.timeout = timeout


class Queue:
    """Runs jobs (generators) one after another; each runs until it yields a wait."""

    def __init__(self, engine: "Engine", name: str):
        self.engine = engine
        self.name = name
        self.jobs: list = []
        self.current = None

    def push(self, job) -> None:
        self.jobs.append(job)
        if self.current is None:
            self._advance(None, first=True)

    def _advance(self, value, first: bool = False) -> None:
        while True:
            if first:
                if not self.jobs:
                    self.current = None
                    return
                self.current = self.jobs.pop(0)  # a handful at most: no deque
                value, first = None, False
            try:
                request = self.current.send(value)
            except StopIteration:
                first = True
                continue
            except Exception as err:  # a bug in one job must not stop the daemon
                self.engine.log(1, f"internal error in queue {self.name}: {type(err).__name__}: {err}")
                first = True
                continue
            if getattr(request, "park", False):
                parked = Queue(self.engine, f"{self.name} (parked)")
                parked.current = self.current
                self.engine.wait(request, parked._advance)
                first = True
                continue
            self.engine.wait(request, self._advance)
            return


class Engine:
    def __init__(self, model: Model, loop, launcher, *, log, journal, changed):
        self.model = model
        self.loop = loop
        self.clock = loop.clock
        self.launcher = launcher  # spawn(entity-or-None, argv, uid, gid) -> pid; kill; notify
        self.log = log  # log(verbosity, message)
        self.journal = journal  # journal(entity, condition, what, **fields)
        self.changed = changed  # call after any change worth persisting
        self.queues: dict = {"nowait": Queue(self, "nowait"), "other": Queue(self, "other")}
        self.exit_waiters: dict[int, callable] = {}
        self.hb_timers: dict[str, object] = {}
        self.episodes: dict[str, dict] = {}  # entity name -> {"jobs": n, "restarted": bool}
        self.verbosity = 1
        self.closed = False
        self.on_missed_high = None  # called with the entity after MISSEDHIGH fired (services)

    def close(self) -> None:
        """ham is stopping: drop the jobs in flight without running the rest of their lists
        (the persisted state says where each entity stands; the next ham finishes it)."""
        self.closed = True
        for queue in list(self.queues.values()):
            for job in [queue.current, *queue.jobs]:
                if job is not None:
                    job.close()
            queue.jobs.clear()
            queue.current = None

    # ---- firing ---------------------------------------------------------------------

    def fire(self, entity: Entity, ctype: int, match=None, note: str = "") -> int:
        """Trigger every enabled condition of type ctype (or CONDANY) on entity and on the
        global entity; match(cond) filters CONDSTATE/CONDRAISE. Returns how many fired."""
        if not entity.enabled:
            return 0
        fired = 0
        owners = [entity] if entity.kind == "global" else [entity, self.model.global_entity]
        for owner in owners:
            if not owner.enabled:
                continue
            for cond in list(owner.conditions.values()):
                if not cond.enabled or cond.type not in (ctype, q.CONDANY):
                    continue
                if match is not None and cond.type == ctype and not match(cond):
                    continue
                cond.fired += 1
                fired += 1
                self.journal(entity.name, cond.name, q.CONDITION_NAMES[ctype], note=note,
                             fired=cond.fired, deaths=entity.deaths, restarts=entity.restarts)
                self._enqueue(cond, owner, self._make_job(entity, owner, cond, list(cond.actions.values())))
        return fired

    def _enqueue(self, cond: Condition, owner: Entity, job) -> None:
        kind = cond.queue
        key = kind if kind != "independent" else ("independent", owner.name, cond.name)
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = Queue(self, f"{owner.name}/{cond.name}")
        queue.push(job)

    def _make_job(self, entity: Entity, owner: Entity, cond: Condition, actions: list):
        # Counted when queued, not when started: a death's job waiting behind another queue's
        # job must still hold its entity (see _episode_settled).
        episode = self.episodes.get(entity.name)
        if episode is not None:
            episode["jobs"] += 1
        return self._job(entity, owner, cond, actions, episode)

    def _job(self, entity: Entity, owner: Entity, cond: Condition, actions: list, episode):
        try:
            pruned = False
            for action in actions:
                if action.removed or not action.enabled:
                    continue
                ok = yield from self.perform(entity, cond, action)
                action.runs += 1
                action.ran_episode = entity.deaths
                if not ok:
                    action.failures += 1
                    for fail in list(action.fails.values()):
                        yield from self.perform(entity, cond, fail, failing=action)
                if (not ok and not action.flags & q.HACTIONKEEPONFAIL) or action.once:
                    self._remove_action(cond, action)
                    pruned = True
                if not ok and action.flags & q.HACTIONBREAKONFAIL:
                    break
            if pruned and not cond.actions and not cond.flags & q.HCONDKEEPONEMPTY:
                if owner.conditions.get(cond.name) is cond:
                    del owner.conditions[cond.name]
                    self.log(2, f"Removing condition: {owner.name}/{cond.name} (emptied)")
            self.changed()
        finally:
            if episode is not None and not self.closed:  # closed: abandoned, as the state says
                episode["jobs"] -= 1
                self._episode_settled(entity)

    def _remove_action(self, cond: Condition, action: Action) -> None:
        action.removed = True
        if cond.actions.get(action.name) is action:
            del cond.actions[action.name]

    # ---- actions --------------------------------------------------------------------

    def perform(self, entity: Entity, cond: Condition, action, failing=None):
        """Run one action (or action-fail item); a generator that returns True on success."""
        kind, params = action.kind, action.params
        where = f"{entity.name}/{cond.name}/{action.name}"
        if failing is not None:
            where = f"{entity.name}/{cond.name}/{failing.name}/fail/{action.name}"
        if kind == "restart":
            ok = yield from self._restart(entity, action)
        elif kind == "execute":
            ok = yield from self._execute(entity, action, where)
        elif kind == "waitfor":
            ok = yield from self._waitfor(params)
        elif kind == "notify_pulse":
            ok = self.launcher.notify_pulse(params)
            self.log(3, f"Notify pulse code/value:{params['code']}/{params['value']} to "
                        f"pid/chid: {params['pid']}/{params['chid']}: {'ok' if ok else 'failed'}")
        elif kind == "notify_signal":
            ok = self.launcher.notify_signal(params)
            self.log(3, f"Notify signal signum/code/value:{params['signum']}/{params['code']}/"
                        f"{params['value']} to pid: {params['pid']}: {'ok' if ok else 'failed'}")
        elif kind == "heartbeat_healthy":
            self.hb_healthy(entity)
            self.log(2, f"Entity {entity.name} HB state set to healthy")
            ok = True
        elif kind == "log":
            if self.verbosity >= params["verbosity"]:
                prefix = f"{where}: " if params["prefix"] else ""
                self.log(0, f"User: {prefix}{params['message']}")
            ok = True
        else:  # the model refuses unknown kinds; a corrupted state file might not
            ok = False
        self.journal(entity.name, cond.name, "action", action=action.name, kind=kind,
                     ok=bool(ok), fail_of=failing.name if failing else None)
        return bool(ok)

    def _restart(self, entity: Entity, action: Action):
        argv = words.split(action.params["line"])
        try:
            pid = self.launcher.spawn(entity, argv, action.uid, action.gid)
        except OSError as err:
            self.log(1, f"Restart Failed: {entity.name}: {argv[0]}: {err.strerror}")
            entity.run = "failed"
            return False
        entity.run = "starting"
        self.changed()
        status = yield ChildExit(pid, START_WINDOW, park=True)
        if status is not False:  # it died inside its start window
            self.log(1, f"Restart Failed: {entity.name}: {status or 'died'} within "
                        f"{START_WINDOW:g} s")
            entity.run, entity.pid = "failed", None
            return False
        entity.run = "running"
        entity.restarts += 1
        entity.restarted = self.clock.time()
        self.episodes.setdefault(entity.name, {"jobs": 0})["restarted"] = True
        self.log(1, f"Restarted: {entity.name} (pid {entity.pid})")
        self._rearm_after_restart(entity)
        self.fire(entity, q.CONDRESTART)
        self.changed()
        return True

    def _rearm_after_restart(self, entity: Entity) -> None:
        for cond in list(entity.conditions.values()):
            if not cond.flags & q.HREARMAFTERRESTART:
                del entity.conditions[cond.name]  # a job in flight still finishes its list
                continue
            for action in list(cond.actions.values()):
                if action.flags & q.HREARMAFTERRESTART:
                    continue
                if action.ran_episode == entity.deaths:
                    self._remove_action(cond, action)  # it has had its one run
                else:
                    action.once = True

    def _execute(self, entity: Entity, action: Action, where: str):
        argv = words.split(action.params["line"])
        self.log(2, f"Executing: {action.params['line']}")
        try:
            pid = self.launcher.spawn(None, argv, action.uid, action.gid)
        except OSError as err:
            self.log(1, f"Execute failed: {where}: {argv[0]}: {err.strerror}")
            return False
        status = yield ChildExit(pid, float(action.params["timeout"]))
        if status is False:
            self.launcher.kill(pid)
            self.log(1, f"Execute timed out: {where} after {action.params['timeout']} s")
            yield ChildExit(pid, 5.0)  # reap it before going on
            return False
        return isinstance(status, ExitStatus) and status.success

    def _waitfor(self, params: dict):
        seconds = params["delay"] / 1000.0
        path = params.get("path")
        if path:
            self.log(2, f"Waiting for {path} for {params['delay']} milliseconds")
            return (yield PathAppears(path, seconds))
        self.log(2, f"Waiting for {params['delay']} milliseconds")
        yield Sleep(seconds)
        return True

    # ---- waiting --------------------------------------------------------------------

    def wait(self, request, resume) -> None:
        if isinstance(request, Sleep):
            self.loop.call_later(request.seconds, lambda: resume(True))
        elif isinstance(request, ChildExit):
            self._wait_exit(request, resume)
        elif isinstance(request, PathAppears):
            self._wait_path(request.path, request.timeout, resume)
        else:
            raise TypeError(f"a job yielded {request!r}")

    def _wait_exit(self, request: ChildExit, resume) -> None:
        def exited(status):
            timer.cancel()
            resume(status)

        def timed_out():
            if self.exit_waiters.pop(request.pid, None) is not None:
                resume(False)

        timer = self.loop.call_later(request.timeout, timed_out)
        self.exit_waiters[request.pid] = exited

    def _wait_path(self, path: str, timeout: float, resume) -> None:
        """inotify where it works (core.pathwatch); else a look every PATH_POLL, only while
        this waitfor is pending."""
        def appeared() -> None:
            timer.cancel()
            resume(True)

        def timed_out() -> None:
            if watch is not None:
                watch.close()
            resume(False)

        from hamtools.core.pathwatch import PathWatch  # only while a waitfor needs it

        timer = self.loop.call_later(timeout, timed_out)
        try:
            watch = PathWatch(self.loop, path, appeared)
        except (OSError, ValueError):
            watch = None
            self._poll_path(path, timer, appeared)

    def _poll_path(self, path: str, timer, appeared) -> None:
        if timer.cancelled:
            return
        if os.path.lexists(path):
            appeared()
        else:
            self.loop.call_later(PATH_POLL, lambda: self._poll_path(path, timer, appeared))

    def process_exited(self, pid: int, status: ExitStatus | None) -> bool:
        """A process ham waits for ended; True if a job was waiting for it."""
        waiter = self.exit_waiters.pop(pid, None)
        if waiter is None:
            return False
        waiter(status)
        return True

    # ---- entity events --------------------------------------------------------------

    def entity_died(self, entity: Entity, status: ExitStatus | None) -> None:
        entity.pid, entity.start = None, None
        entity.run = "dead"
        entity.deaths += 1
        entity.last_death = self.clock.time()
        self._hb_stop(entity)
        abnormal = status is not None and status.signal in CORE_SIGNALS
        self.log(1, f'Entity "{entity.name}" died{" abnormally" if abnormal else ""} ({status or "exit status unknown"})')
        self.episodes[entity.name] = {"jobs": 0, "restarted": False}
        entity.episode = True
        note = str(status) if status else "died"
        if abnormal:
            self.fire(entity, q.CONDABNORMALDEATH, note=note)
        self.fire(entity, q.CONDDEATH, note=note)
        self.changed()
        self._episode_settled(entity)

    def _episode_settled(self, entity: Entity) -> None:
        """Once every job of a death has finished: an entity not restarted goes (QNX)."""
        episode = self.episodes.get(entity.name)
        if episode is None or episode["jobs"] > 0:
            return
        del self.episodes[entity.name]
        entity.episode = False
        self.changed()
        if episode.get("restarted") or entity.pid is not None:
            return
        if entity.service is not None:
            return  # a service stays: its policy decides (hamtools.hamd.services)
        if entity.run == "starting":
            return
        if entity.flags & q.HENTITYKEEPONDEATH:
            if entity.run != "failed":
                entity.run = "dead"
            self.changed()
            return
        if self.model.entities.get(entity.name) is entity:
            self.remove_entity(entity, why="not restarted")

    def resume_episode(self, entity: Entity) -> None:
        """An earlier ham stopped between entity's death and the end of its handling: finish
        it. Its restart action runs now (or, without one, QNX's rule removes the entity); the
        other actions of its death may have run already and are not run a second time."""
        self.log(1, f"{entity.name}: finishing the handling of its death, cut short by ham's stop")
        self.episodes[entity.name] = {"jobs": 0, "restarted": False}
        for cond in entity.conditions.values():
            restart = next((a for a in cond.actions.values() if a.kind == "restart"), None)
            if cond.type in DEATH_TYPES and restart is not None and cond.enabled and restart.enabled:
                self._enqueue(cond, entity, self._make_job(entity, entity, cond, [restart]))
        self._episode_settled(entity)

    def remove_entity(self, entity: Entity, why: str, spare: tuple = ()) -> None:
        """Take entity out of the tree; queued jobs of its conditions stop, except those of
        the condition types in spare (a detach's own CONDDETACH still runs its actions)."""
        self._hb_stop(entity)
        for cond in entity.conditions.values():
            if cond.type in spare:
                continue
            for action in cond.actions.values():
                action.removed = True
        self.model.entities.pop(entity.name, None)
        self.log(2, f"Entity {entity.name} removed ({why})")
        self.journal(entity.name, None, "removed", note=why)
        self.changed()

    def detached(self, entity: Entity) -> None:
        """A proper detach: CONDDETACH, then monitoring ends (the process runs on)."""
        self._hb_stop(entity)
        self.fire(entity, q.CONDDETACH)
        self.remove_entity(entity, why="detached", spare=(q.CONDDETACH, q.CONDANY))

    def set_state(self, entity: Entity, new: int) -> int:
        old, entity.state = entity.state, new
        self.changed()
        return self.fire(entity, q.CONDSTATE, match=lambda c: c.matches_state(old, new),
                         note=f"{old} -> {new}")

    def raised(self, entity: Entity, rtype: int, rclass: int, rseverity: int) -> int:
        return self.fire(entity, q.CONDRAISE,
                         match=lambda c: c.matches_raise(rtype, rclass, rseverity),
                         note=f"type {rtype} class {rclass} severity {rseverity}")

    def do_now(self, entity: Entity, cond: Condition, action: Action) -> None:
        """HACTIONDONOW: run this one action once, now, in its condition's queue."""
        owner = self.model.entities.get(entity.name, entity)
        self._enqueue(cond, owner, self._make_job(entity, owner, cond, [action]))

    # ---- heartbeats -----------------------------------------------------------------
    # Deadline-based, not a tick per period: a beat only stores its time; one timer per
    # entity sits at the next threshold and re-arms itself from the latest beat. MISSEDLOW
    # fires once hpdl + 1/2 periods pass with no beat (QNX checks on period boundaries, which
    # lands between hpdl and hpdl + 1 periods; the midpoint lets a beat be up to half a
    # period late without counting as missed); MISSEDHIGH likewise with hpdh. Each fires once
    # per episode; heartbeat_healthy (or a new attach) re-arms.

    def hb_start(self, entity: Entity) -> None:
        entity.last_beat = self.clock.monotonic()
        entity.hb_state = "healthy"
        self._hb_arm(entity)

    def beat(self, entity: Entity) -> None:
        entity.last_beat = self.clock.monotonic()
        entity.beats += 1

    def hb_healthy(self, entity: Entity) -> None:
        if entity.heartbeat:
            self.hb_start(entity)
            self.changed()

    def _hb_threshold(self, entity: Entity) -> int:
        if entity.hb_state == "healthy" and entity.hpdl > 0:
            return entity.hpdl
        if entity.hb_state in ("healthy", "missedlow") and entity.hpdh > 0:
            return entity.hpdh
        return 0

    def _hb_arm(self, entity: Entity) -> None:
        self._hb_stop(entity)
        threshold = self._hb_threshold(entity)
        if not entity.heartbeat or threshold == 0:
            return
        when = entity.last_beat + (threshold + 0.5) * entity.hb_period
        self.hb_timers[entity.name] = self.loop.call_at(when, lambda: self._hb_check(entity))

    def _hb_stop(self, entity: Entity) -> None:
        timer = self.hb_timers.pop(entity.name, None)
        if timer is not None:
            timer.cancel()

    def _hb_check(self, entity: Entity) -> None:
        self.hb_timers.pop(entity.name, None)
        if self.model.entities.get(entity.name) is not entity or not entity.heartbeat:
            return
        elapsed = (self.clock.monotonic() - entity.last_beat) / entity.hb_period
        missed = math.floor(elapsed - 0.5 + 1e-9)  # the epsilon: the timer fires at exactly n + 1/2
        if entity.hb_state == "healthy" and 0 < entity.hpdl <= missed:
            entity.hb_state = "missedlow"
            entity.hb_missed_low += 1
            self.log(1, f"Entity {entity.name} missed heartbeat: severity low ({missed} missed)")
            self.fire(entity, q.CONDHBEATMISSEDLOW, note=f"{missed} missed")
            self.changed()
        if entity.hb_state in ("healthy", "missedlow") and 0 < entity.hpdh <= missed:
            self._missed_high(entity, f"{missed} missed")
        self._hb_arm(entity)

    def hb_trigger(self, entity: Entity) -> None:
        """sd_notify's WATCHDOG=trigger: the high threshold is missed now."""
        if entity.hb_state != "missedhigh":
            self._hb_stop(entity)
            self._missed_high(entity, "WATCHDOG=trigger")

    def _missed_high(self, entity: Entity, why: str) -> None:
        entity.hb_state = "missedhigh"
        entity.hb_missed_high += 1
        self.log(1, f"Entity {entity.name} missed heartbeat: severity high ({why})")
        self.fire(entity, q.CONDHBEATMISSEDHIGH, note=why)
        self.changed()
        if self.on_missed_high is not None:
            self.on_missed_high(entity)
