"""ham, wired together: one thread, one event loop, everything else is a callback.

Deaths: ham is a child subreaper; SIGCHLD reaps every exited child (waitpid(-1), in a loop:
SIGCHLD merges) with its exit status; a process ham did not start (adopted, or left running by
an earlier ham) is watched by pidfd. A spawned process that exits 0 leaving a tagged orphan is
followed to it (daemon()). Only then is it a death.

State: loaded at start (re-adopting every entity whose (pid, start time) still runs, so a ham
started again never starts second copies; an entity that died while no ham watched gets its
death handled now), saved atomically a moment after changes, never on the death -> respawn
path.
"""

import fcntl
import os
import sys
import _signal

from hamtools.core import cjson, fdlimit, libc, proc
from hamtools.hamd import handover
from hamtools.hamd.engine import Engine
from hamtools.hamd.journal import Journal
from hamtools.hamd.launch import Launcher
from hamtools.hamd.model import Entity
from hamtools.hamd.notify import NotifySocket
from hamtools.hamd.ops import Requests
from hamtools.hamd.server import Server
from hamtools.hamd.store import Store
from hamtools.core import hamconsts as q

# `hamctl reexec` tries the new code in a process of its own first: sys.argv[1] is its root.
REEXEC_CHECK = ("import sys; sys.path.insert(0, sys.argv[1]); import hamtools.hamd.daemon, hamtools.applets.ham; "
                "from hamtools.hamd import handover; "
                f"sys.exit(not hamtools.__file__.startswith(sys.argv[1]) or handover.VERSION != {handover.VERSION!r})")
SAVE_DELAY = 0.02  # seconds: coalesce a burst of changes into one write
REALTIME_PRIORITY = 10  # --realtime: above ordinary real-time work, below the kernel's threads
IGNORED_SIGNALS = (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGPIPE, _signal.SIGUSR1,
                   _signal.SIGUSR2, _signal.SIGALRM)


class CannotStart(Exception):
    """A reason ham does not start, worded for "ham: cannot start: <reason>"."""


class AlreadyRunning(CannotStart):
    pass


class Ham:
    def __init__(self, loop, runtime_dir: str, log, *, gid: int = 0, stop_entities: bool = False,
                 keep_verbosity: bool = True, argv: list[str] | None = None, guardian: bool = True):
        """argv: ham's options, as the guardian and `hamctl reexec` run ham again (None, as
        in tests that drive a Ham in-process: neither)."""
        self.loop = loop
        self.clock = loop.clock
        self.runtime_dir = runtime_dir
        self.log = log
        self.stop_entities_on_term = stop_entities
        os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
        self.handover = handover.received()  # from the ham before us: a takeover, a re-exec
        self._lock_fd = _lock(os.path.join(runtime_dir, "ham.lock"), self._handed("lock"))
        self.store = Store(os.path.join(runtime_dir, "state.json"))
        self.model, meta, problem = self.store.load()
        if problem:
            log(0, problem)
        self.ham_failures = int(meta.get("ham_failures", 0))
        if self.taking_over:
            self.ham_failures += 1
        self.guardian_failures = int(meta.get("guardian_failures", 0))
        groups = meta.get("groups")  # service groups' settings, for hamd.services
        self.saved_groups = groups if isinstance(groups, dict) else {}
        self.started = self.clock.time()
        self.journal = Journal(os.path.join(runtime_dir, "events.jsonl"), self.clock)
        self.manager = None  # a service manager over ham (hamd.managed), if one gave NOTIFY_SOCKET
        if os.environ.get("NOTIFY_SOCKET"):
            from hamtools.hamd.managed import Manager

            self.manager = Manager.from_environment(log)  # before Launcher copies the environment
        self.watchdog = None  # hamd.hwdog, with --watchdog
        self.launcher = Launcher(log)
        self.engine = Engine(self.model, loop, self.launcher, log=log,
                             journal=self.journal.record, changed=self.changed)
        self.engine.on_missed_high = self._missed_high
        if keep_verbosity:
            log.verbosity = int(meta.get("verbosity", log.verbosity))
        self.engine.verbosity = log.verbosity
        self.requests = Requests(self)
        self.server = Server(self, runtime_dir, gid)
        self.pidfds: dict[int, int] = {}  # pid -> pidfd, for processes that are not our children
        self._exit_reports = None  # core.procexit: how those ended, where the kernel tells
        self.exit_callbacks: dict[int, list] = {}  # pid -> called once it has exited
        self._services = None  # made on first use: a ham without services never loads them
        self.config_paths: list[str] = []
        self._save_timer = None
        self._trim_timer = None
        self._after_save: list = []  # answers held until the changes they report are on disk
        self.metrics = None  # hamd.metrics.MetricsFile, with --metrics-file: rewritten on each save
        self.stopping = False
        self.argv = argv
        self.wants_guardian = guardian and argv is not None
        self.guardian = None  # hamd.guardian, once started
        self.reexec_failure = None  # why the last `hamctl reexec` did not happen

    @property
    def taking_over(self) -> bool:
        return self.handover is not None and self.handover.reason == "takeover"

    def _handed(self, name: str) -> int | None:
        return self.handover.take(name) if self.handover is not None else None

    @property
    def services(self):
        if self._services is None:
            from hamtools.hamd.services import Services

            self._services = Services(self)
        return self._services

    # ---- start and stop ---------------------------------------------------------------

    def start(self, config_paths: list[str] = (), watchdog: dict | None = None,
              realtime: bool = False) -> None:
        """watchdog: hamd.hwdog's settings (path, timeout, shutdown_timeout, record)."""
        self.config_paths = list(config_paths)
        loaded = self._config_at_start() if self.config_paths else None  # errors: nothing started
        protect_self(realtime, self.log)
        if watchdog is not None:
            from hamtools.core.watchdog import describe_error
            from hamtools.hamd.hwdog import HardwareWatchdog

            try:
                self.watchdog = HardwareWatchdog.open(self.loop, self.log, inherited=self._handed("watchdog"),
                                                      **watchdog)
            except OSError as err:
                raise CannotStart(f"watchdog {watchdog['path']}: {describe_error(err)}") from None
        proc.set_child_subreaper()
        for signum in IGNORED_SIGNALS:
            _signal.signal(signum, _signal.SIG_IGN)
        self.loop.add_signal(_signal.SIGCHLD, self._reap)
        self.loop.add_signal(_signal.SIGTERM, self._on_term)
        self.loop.add_signal(_signal.SIGHUP, self._on_hup)
        self.server.open(self._raise_fd_limit(), self.handover)
        self.notify = NotifySocket(self, os.path.join(self.runtime_dir, "notify"), self.handover)
        self.launcher.notify_path = self.notify.path
        self.launcher.before_spawn = self.persist_before_spawn
        self._resume()
        self._reap()
        if loaded is not None:
            self.services.apply(*loaded)
        elif self._services is not None:  # no files this time: saved services still start in order
            self._services.start_ready()
        self.save()
        if self.handover is not None:
            self.handover.close_rest()
            self.log(0 if self.taking_over else 1,
                     f"{'took over from' if self.taking_over else 're-executed as'} ham pid "
                     f"{self.handover.from_pid}" + (f" (ham failures: {self.ham_failures})"
                                                     if self.taking_over else ""))
        self._start_guardian()
        trim_heap()
        self.log(1, f"ham started, pid {os.getpid()}, {len(self.model.entities) - 1} entities")
        if self.manager is not None:
            self.manager.started(self.loop, f"{len(self.model.entities) - 1} entities")

    def _raise_fd_limit(self) -> int:
        given, limit = fdlimit.raise_own()
        if limit > given:
            self.log(2, f"descriptor limit {given} raised to {limit} (what ham starts gets {given})")
        return limit

    def _resume(self) -> None:
        """Re-adopt what an earlier ham left running; handle deaths it did not see; services
        go on where it left them (backoffs, restart history, what ham wants of them)."""
        missed, interrupted, services = [], [], []
        heirs = None  # tagged processes, read once if some entity needs them
        for entity in list(self.model.entities.values()):
            if entity.kind in ("global", "placeholder"):
                continue
            if entity.service is not None:
                services.append(entity)
            if entity.pid is not None and entity.start is not None and _still_running(entity):
                self._readopt(entity)
                continue
            if entity.kind == "attached":
                if heirs is None:
                    heirs = self.launcher.tagged_processes()
                heir = _heir(heirs.get(entity.name, ()), entity.start)
                if heir is not None:  # started by a ham that died before it could save the pid
                    entity.pid, entity.start = heir
                    self._readopt(entity)
                    continue
            if entity.pid is None:
                if entity.episode and entity.service is None:
                    interrupted.append(entity)
                continue
            missed.append(entity)
        for entity in services:  # their policy's memory first: a missed death needs it
            self.services.resume(entity, running=entity.pid is not None and entity not in missed)
        for entity in missed:
            self.log(1, f"{entity.name} (pid {entity.pid}) died while no ham watched it")
            self.engine.entity_died(entity, None)
            if entity.service is not None:
                self.services.died(entity, None)
        for entity in interrupted:
            self.engine.resume_episode(entity)

    def _readopt(self, entity: Entity) -> None:
        # still our child after `hamctl reexec`; after a takeover, the kernel gave it elsewhere
        entity.spawned = proc.parent(entity.pid) == os.getpid()
        entity.episode = False  # whatever was being handled ended with this process
        if entity.run in ("starting", "dead", "backoff"):
            entity.run = "running"
        self.adopt(entity)
        if entity.heartbeat:
            self.engine.hb_start(entity)
        self.log(1, f"Re-adopted {entity.name} (pid {entity.pid})")

    def _config_at_start(self):
        try:
            return self._load_config()
        except ValueError as bad:  # ConfigError
            if self.handover is None:
                raise
            self.log(0, f"configuration refused, going on with the saved state: {bad}")
            return None  # a broken file must not leave the entities without a ham

    def _load_config(self):
        from hamtools.hamd import config

        return config.load(self.config_paths)  # specs, groups, trees

    def reload(self) -> dict:
        """hamctl reload / SIGHUP: apply the configuration files again. A bad file changes
        nothing (raises ConfigError, whose str is FILE:LINE: message)."""
        if not self.config_paths:
            return {"added": [], "removed": [], "changed": [], "unchanged": []}
        result = self.services.apply(*self._load_config())
        self.log(1, "reloaded: " + ", ".join(f"{k} {len(v)}" for k, v in result.items()))
        return result

    def _on_hup(self) -> None:
        try:
            self.reload()
        except ValueError as bad:  # ConfigError: keep what runs
            self.log(0, f"SIGHUP: reload refused: {bad}")

    def _on_term(self) -> None:
        self.log(1, "SIGTERM: stopping" + (" with the entities" if self.stop_entities_on_term else ""))
        self.request_stop(self.stop_entities_on_term, disarm=False)

    def request_stop(self, stop_entities: bool, disarm: bool = True) -> None:
        """ham_stop (disarm: the hardware watchdog's magic close) or SIGTERM (re-armed with the
        shutdown timeout): answer first (the caller is waiting), then stop on the next turn."""
        self.stopping = True
        self.loop.call_later(0, lambda: self._stop(stop_entities, disarm))

    def _stop(self, stop_entities: bool, disarm: bool) -> None:
        if self.guardian is not None:
            self.guardian.stop()  # first: it must not take ham's leaving for a death
        if self.watchdog is not None:
            self.watchdog.disarm() if disarm else self.watchdog.shutdown()
        if not stop_entities:
            self._finish_stop()
            return
        for entity in self.model.entities.values():  # the others: QNX-built entities
            if entity.pid is not None and entity.kind != "global" and entity.service is None:
                proc.signal_identity(proc.ProcessId(entity.pid, entity.start or 0), _signal.SIGTERM)
                entity.run = "stopped"
        self.services.stop_all(then=self._finish_stop)  # services in reverse start order

    def _finish_stop(self) -> None:
        self.save()  # and the answers waiting for it go out before the sockets close
        if self.manager is not None:
            self.manager.stopping()
        self.server.shutdown()
        self.notify.close()
        self.loop.stop()

    def close(self) -> None:
        self.engine.close()
        if self._services is not None and self._services._capture is not None:
            self._services._capture.close()
        if self._save_timer is not None:
            self._save_timer.cancel()
        for pidfd in self.pidfds.values():
            os.close(pidfd)
        self.pidfds.clear()
        if self._exit_reports is not None:
            self._exit_reports.close()
        self.launcher.close()
        self.journal.close()
        self.log.close()
        os.close(self._lock_fd)

    # ---- what the next ham inherits (hamd.handover, hamd.guardian) ----------------------

    def handover_fds(self) -> dict[str, int]:
        fds = {"lock": self._lock_fd, **self.server.handover_fds(), "notify": self.notify.sock.fileno()}
        if self.watchdog is not None and self.watchdog.device.fd >= 0:
            fds["watchdog"] = self.watchdog.device.fd
        return fds

    def manager_environment(self, main_pid: int | None = None) -> dict[str, str]:
        return self.manager.environment(main_pid) if self.manager is not None else {}

    def _start_guardian(self) -> None:
        from hamtools.core import relaunch
        from hamtools.hamd.guardian import Guardian

        kept = self.handover.guardian if self.handover is not None else None
        if kept is not None:  # the re-exec's: it stood by until we were up; ours replaces it
            old = Guardian.kept(self, *kept)
            if old is not None:
                old.stop()
        if self.wants_guardian:
            self.guardian = Guardian(self, relaunch.command("ham", self.argv))
            self.guardian.start()

    def reexec(self, zipapp: str | None) -> None:
        """hamctl reexec: run ham's code from zipapp (default: the file ham runs from, which
        may have been replaced since) in this very process, keeping every entity, fd and
        child. The new code is tried first in a process of its own (it must import ham's
        daemon): ham goes on as it is when it cannot."""
        import errno
        from hamtools.core import relaunch
        from hamtools.hamd.model import HamError

        if self.argv is None:
            raise HamError(errno.ENOTSUP, "this ham was not started as a program: it cannot re-exec")
        if zipapp is not None and not os.path.exists(zipapp):
            raise HamError(errno.ENOENT, f"{zipapp}: no such file")
        root = relaunch.package_root() if zipapp is None else relaunch.root_of(zipapp)
        check = proc.spawn([sys.executable, *relaunch.interpreter_flags(), "-c", REEXEC_CHECK, root])
        check.close()  # reaped on SIGCHLD, its status handed to the waiter
        self.engine.exit_waiters[check.pid] = lambda status: self._reexec_checked(root, status)
        self.reexec_failure = None

    def _reexec_checked(self, root: str, status) -> None:
        if status is None or status.code != 0:
            self.reexec_failure = f"the code in {root} cannot run ham ({status})"
            self.log(0, f"reexec refused: {self.reexec_failure}")
            return
        from hamtools.core import relaunch

        self.save()
        fds = self.handover_fds()
        handover.inheritable(fds)
        # The guardian stands by: a new ham that fails to start is replaced by it (with the
        # code it came from); one that starts stops it and starts its own.
        kept = self.guardian.handover() if self.guardian is not None else None
        env = dict(os.environ, **self.manager_environment(os.getpid()))
        env[handover.VARIABLE] = handover.Handover("reexec", os.getpid(), fds, kept).encode()
        command = relaunch.command("ham", self.argv, root=root)
        self.log(0, f"re-executing ham from {root}")
        try:
            fdlimit.as_given(os.execve, command[0], command, env)  # the new ham raises it again
        except OSError as err:
            for fd in fds.values():
                os.set_inheritable(fd, False)
            if kept is not None:
                os.set_inheritable(kept[1], False)
            self.reexec_failure = f"exec {command[0]}: {err.strerror}"
            self.log(0, f"reexec failed: {self.reexec_failure}")

    # ---- processes --------------------------------------------------------------------

    def adopt(self, entity: Entity) -> None:
        """Watch entity's process: children by SIGCHLD, anything else by pidfd."""
        if entity.spawned or entity.pid in self.pidfds:
            return
        try:
            held = proc.Process.open(entity.pid, expect=proc.ProcessId(entity.pid, entity.start or 0)
                                     if entity.start else None)
        except (ProcessLookupError, PermissionError):
            self.loop.call_later(0, lambda: self._exited(entity.pid, None))
            return
        self.pidfds[entity.pid] = held.pidfd
        pid = entity.pid
        self.loop.watch_pidfd(held.pidfd, lambda: self._pidfd_fired(pid))
        if self._exit_reports is None:
            from hamtools.core.procexit import ExitReports

            self._exit_reports = ExitReports(self.loop)
        self._exit_reports.watch(pid)
        if self._exit_reports.failed and self._exit_reports.watched == {pid}:
            self.log(2, f"exit statuses of adopted processes unknown: process connector: "
                        f"{self._exit_reports.failed}")

    def forget(self, entity: Entity) -> None:
        pidfd = self.pidfds.pop(entity.pid, None) if entity.pid else None
        if pidfd is not None:
            self.loop.remove_reader(pidfd)
            os.close(pidfd)
            self._exit_reports.unwatch(entity.pid)

    def _pidfd_fired(self, pid: int) -> None:
        pidfd = self.pidfds.pop(pid, None)
        if pidfd is not None:
            os.close(pidfd)
        self._reap()  # it may be a child after all (re-parented to us): get its status
        code = self._exit_reports.status(pid)  # queued before the pidfd fired, if told at all
        self._exit_reports.unwatch(pid)
        try:
            status = None if code is None else proc.ExitStatus.from_wait_status(code)
        except ValueError:
            status = None
        self._exited(pid, status)

    def _reap(self) -> None:
        for pid, status in proc.reap_all():
            self._exited(pid, status)

    def after_exit(self, pid: int, callback) -> None:
        self.exit_callbacks.setdefault(pid, []).append(callback)

    def _exited(self, pid: int, status) -> None:
        if self.guardian is not None and self.guardian.owns(pid):
            self.guardian.exited(status)
            return
        for callback in self.exit_callbacks.pop(pid, []):
            callback_entity = self.model.by_pid(pid)
            if callback_entity is not None:
                self.forget(callback_entity)
                callback_entity.pid = callback_entity.start = None
            callback()
        entity = self.model.by_pid(pid)
        if entity is not None and (status is None or status.code == 0):
            heir, exiting = self.launcher.find_daemon(entity, self._known_pids())
            if heir is None and exiting:  # maybe the middle of its double fork: once it is gone
                self.after_exit(exiting[0], lambda: self._exited(pid, status))
                return
            if heir is not None:  # it daemonized: follow the new pid, as QNX follows daemon()
                self.log(2, f"DaemonFork o:{pid}, n:{heir} ({entity.name})")
                self.follow(entity, heir)
                return
        if self.engine.process_exited(pid, status):
            return
        if entity is not None and not self.stopping:
            self.forget(entity)
            if entity.service is not None:
                _kill_leftovers(pid)
            self.engine.entity_died(entity, status)
            if entity.service is not None:
                self.services.died(entity, status)
        elif entity is None:
            self.log(4, f"reaped pid {pid} ({status})")

    def follow(self, entity: Entity, pid: int) -> None:
        """entity's process is now pid (it daemonized, or said MAINPID=): watch that one."""
        old = entity.pid
        self.forget(entity)
        entity.pid, entity.start = pid, proc.start_time(pid)
        entity.spawned = proc.parent(pid) == os.getpid()  # else a pidfd watches it
        waiter = self.engine.exit_waiters.pop(old, None) if old is not None else None
        if waiter is not None:
            self.engine.exit_waiters[pid] = waiter
        self.adopt(entity)
        self.changed()

    def became_ready(self, entity: Entity) -> None:
        """READY=1 from the entity (hamd.notify)."""
        if entity.service is not None:
            self.services.notified_ready(entity)
        else:
            entity.ready = True

    def kill_pending(self, entity: Entity, pending: bool) -> None:
        """A hung worker's kill was sent (True) or it is dead at last (False): the hardware
        watchdog is not fed in between (hamd.hwdog)."""
        if self.watchdog is not None:
            self.watchdog.kill_pending(entity.name, pending, entity.pid)

    def _missed_high(self, entity: Entity) -> None:
        if entity.service is not None and entity.pid is not None:
            self.services.hung(entity)

    def _known_pids(self) -> set[int]:
        known = {e.pid for e in self.model.entities.values() if e.pid is not None}
        return known | set(self.engine.exit_waiters)

    def self_connection_lost(self, entity: Entity) -> None:
        """A self-attached entity's connection closed without ham_detach_self: a death."""
        if self.model.entities.get(entity.name) is entity and not self.stopping:
            status = None
            self.engine.entity_died(entity, status)

    # ---- persistence ------------------------------------------------------------------

    def changed(self) -> None:
        if self._save_timer is None:
            self._save_timer = self.loop.call_later(SAVE_DELAY, self.save)

    def when_saved(self, callback) -> None:
        """Call callback once what has changed is on disk: an answer to a request is sent only
        then, so whatever a client was told survives a kill of ham (the save is hurried to
        the end of this turn of the loop)."""
        if self._save_timer is None:
            callback()
            return
        self._after_save.append(callback)
        if len(self._after_save) == 1:
            self._save_timer.cancel()
            self._save_timer = self.loop.call_later(0, self.save)

    def persist_before_spawn(self, entity: Entity | None) -> None:
        """Before an entity's first process starts, the entity is on disk: a ham killed
        right after the spawn leaves a successor that knows whose process it is (it finds
        it by its HAM_ENTITY tag) instead of an orphan."""
        if entity is not None and entity.name not in self.store.saved:
            if self._save_timer is not None:
                self._save_timer.cancel()
            self.save()

    def save(self) -> None:
        self._save_timer = None
        meta = {"ham_failures": self.ham_failures, "guardian_failures": self.guardian_failures, "verbosity": self.engine.verbosity,
                "ham_pid": os.getpid(), "saved": self.clock.time()}
        if self._services is not None:
            self._services.remember()  # restart histories and pending backoffs, into the entities
            meta["groups"] = self._services.groups
        try:
            self.store.save(self.model, meta)
        except OSError as err:
            self.log(0, f"cannot save state to {self.store.path}: {err.strerror}")
        waiting, self._after_save = self._after_save, []
        for callback in waiting:
            callback()
        if self.metrics is not None:
            self.metrics.update(self)
        self.trim_soon()

    def trim_soon(self) -> None:
        """Give the heap that requests and their documents freed back to the system, once, at
        the end of this turn of the loop (about 0.1 MB with 100 entities; ham's resident size
        is budgeted). Called after saves, which are coalesced, and big answers: never on the
        death -> respawn path."""
        if self._trim_timer is None:
            self._trim_timer = self.loop.call_later(0, self._trim)

    def _trim(self) -> None:
        self._trim_timer = None
        libc.call("malloc_trim", 0)

    def set_verbosity(self, level: int) -> None:
        self.engine.verbosity = self.log.verbosity = level
        self.log(0, f"Verbosity set to {level}")
        self.changed()

    # ---- status (SPEC §10) ------------------------------------------------------------

    def status(self) -> str:
        """The status as JSON text, entity by entity (cjson.dumps_with_list: an answer about
        100 entities built whole grew ham's resident size by 0.7 MB for good)."""
        return cjson.dumps_with_list({
            "ham_pid": os.getpid(),
            "guardian_pid": self.guardian.pid if self.guardian is not None else None,
            "ham_failures": self.ham_failures,
            "guardian_failures": self.guardian_failures,
            "verbosity": self.engine.verbosity,
            "started": self.started,
            "groups": {} if self._services is None else self._services.groups,
            "watchdog": self.watchdog.status() if self.watchdog is not None else None,
            "reexec_failure": self.reexec_failure,
        }, "entities", (_entity_status(e) for e in self.model.entities.values()))


def _entity_status(entity: Entity) -> dict:
    run = entity.run
    if entity.kind == "placeholder":
        run = "stopped"
    return {
        "name": entity.name, "type": entity.kind, "pid": entity.pid, "run": run,
        "state": entity.state, "ready": entity.ready if entity.service is not None else None,
        "service": entity.service is not None, "want": entity.want if entity.service is not None else None,
        "heartbeat_state": entity.hb_state if entity.heartbeat else None,
        "restarts": entity.restarts, "deaths": entity.deaths, "enabled": entity.enabled,
        "beats": entity.beats,
        "notify": ({"state": entity.notify_state, "status": entity.notify_status, "errno": entity.notify_errno}
                   if entity.notify_state or entity.notify_status or entity.notify_errno is not None else None),
        "flags": q.flag_names(entity.flags, q.ENTITY_FLAG_NAMES),
        "uid": entity.uid, "command": entity.argv,
        "heartbeat": ({"period": entity.hb_period, "hpdl": entity.hpdl, "hpdh": entity.hpdh,
                       "missed_low": entity.hb_missed_low, "missed_high": entity.hb_missed_high}
                      if entity.heartbeat else None),
        "created": entity.created, "last_death": entity.last_death, "restarted": entity.restarted,
        "conditions": [{
            "name": c.name, "type": q.CONDITION_NAMES[c.type],
            "flags": q.flag_names(c.flags, q.CONDITION_FLAG_NAMES), "enabled": c.enabled,
            "params": c.params, "fired": c.fired,
            "actions": [{
                "name": a.name, "kind": a.kind, "flags": q.flag_names(a.flags, q.ACTION_FLAG_NAMES),
                "enabled": a.enabled, "params": {k: v for k, v in a.params.items() if k != "start"},
                "runs": a.runs, "failures": a.failures,
                "fails": [{"name": f.name, "kind": f.kind, "params": f.params} for f in a.fails.values()],
            } for a in c.actions.values()],
        } for c in entity.conditions.values()],
    }


def protect_self(realtime: bool, log) -> None:
    """ham is the last process the OOM killer should pick (its children get their score back,
    core.proc.spawn); with --realtime its memory is locked and it runs SCHED_FIFO, which its
    children do not inherit (SCHED_RESET_ON_FORK)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("-1000")
    except OSError as err:
        log(1, f"oom_score_adj -1000 refused: {err.strerror} (it needs CAP_SYS_RESOURCE)")
    if not realtime:
        return
    from hamtools.core import libc

    if libc.call("mlockall", 3) != 0:  # MCL_CURRENT | MCL_FUTURE
        log(0, "--realtime: mlockall failed (not root, or RLIMIT_MEMLOCK)")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(REALTIME_PRIORITY))
    except OSError as err:
        log(0, f"--realtime: SCHED_FIFO refused: {err.strerror}")


def trim_heap() -> None:
    """Hand the memory that starting up used and freed back to the system (ham's resident
    size is budgeted against a bare pidfd loop)."""
    import gc

    gc.collect()
    libc.call("malloc_trim", 0)


def _lock(path: str, inherited: int | None = None) -> int:
    """Hold ham.lock for our lifetime: a second ham on this runtime dir refuses to start.
    inherited: the lock as the ham before us held it (the same open file, so still ours)."""
    fd = inherited if inherited is not None else os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise AlreadyRunning(f"already running (pid {holder or '?'})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _kill_leftovers(pgid: int) -> None:
    """A service's main process died: what it left in its process group (ham starts each
    one as a group leader) dies too before the restart, as systemd's control-group kill
    does, so a killed shell's children never run beside its next incarnation."""
    try:
        os.killpg(pgid, _signal.SIGKILL)
    except OSError:
        pass  # nothing left (ESRCH), the usual case


def _still_running(entity: Entity) -> bool:
    """The entity's recorded process runs: a zombie of ours (after a re-exec) is reaped for
    its status next; a zombie of someone else's (a dead ham's child that init has not reaped
    yet) is dead, and the entity's process may be a newer one (found by its tag)."""
    ident = proc.ProcessId(entity.pid, entity.start)
    return ident.alive() and (not ident.zombie() or proc.parent(entity.pid) == os.getpid())


def _heir(tagged, recorded_start: int | None) -> tuple[int, int] | None:
    """Of the live processes tagged with an entity's name, the one that is its process: a
    group leader (ham starts each process as one, and a daemon leads its own session; what a
    killed process left behind stays in its group), started after the recorded one, not a
    child of another tagged one (its own children carry the tag too), the newest of those."""
    from hamtools.hamd.launch import topmost

    tops = topmost([t for t in tagged if t[3] == t[0] and (recorded_start is None or t[1] > recorded_start)])
    if not tops:
        return None
    pid, start, _, _ = max(tops, key=lambda t: t[1])
    return pid, start
