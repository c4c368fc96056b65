"""sockmon's watches: connect, notice the death, run the script, reconnect, give up.

One Watch per TARGET SCRIPT pair, all on one event loop. A watch never waits for another
(one's script does not delay another's detection), but giving up is not always private:
with --on-give-up exit (the default) one watch giving up stops them all, reboot reboots,
and only a CMD is run for that watch alone (Monitor.give_up). A watch's life (the seed's
loop, made non-blocking):

    connecting --ok--> watching --connection ended--> probing --probe fails--> restarting
        |  ^ fail: wait retry-interval,                  |  probe connects:            |
        |  |       up to --retries tries                 |  confirming, then           |
        |  +---------------------------------------------+-> watching                  |
        +--all tries failed--> give-up action          restarting --script done--> connecting

Death versus an idle close. A server may close a connection it finds idle; that is not a
death. So when the connection ends (EOF, reset, keepalive/user timeout) sockmon first asks
the kernel whether the server *process* is gone: for unix sockets the peer is known
(SO_PEERPIDFD, or SO_PEERCRED's pid verified by start time) and held by a pidfd, and if it
has exited the server is dead, no further question. Otherwise it probes: one reconnect.
A refused/absent/timed-out probe means dead. The peer's pidfd stays watched while the probe
is in flight, so a server that dies while we probe is still seen at once. The peer pidfd
turning readable while our connection is still up (another process holds the socket: a
daemonizing parent, a child that inherited the fd) is checked the same way: look at the
connection, then probe.

A probe that connects proves less than it seems: a dying process's last fds are torn down
one by one, often our connection before its listener, so the probe can land in the queue
of a listener that is about to close. When a listener closes, the kernel resets the
connections still in its queue (TCP and unix alike); a server that accepted the probe would
close it with an EOF instead. So a probe that connects is first *confirmed* for QUICK_CLOSE:
a reset on it in that time brings one more probe at once (refused: dead; connects: alive),
the peer's exit means dead, an EOF means a living server accepted and closed it. Whatever
decides, the script gets the first end's reason, not the probe's, and "not dead" is logged
only once it is decided.

A server that closes connections at once would make probing a busy loop, so a probe comes
at the earliest QUICK_CLOSE after the previous one (the immediate re-check above aside);
the first probe after a (re)connection never waits.
"""

import os
import signal
from dataclasses import dataclass

from hamtools.core import proc as procs
from hamtools.core.errors import describe_oserror
from hamtools.core.log import Log
from hamtools.core.loop import Loop
from hamtools.sockmon.targets import Link, Lost, ProcessLink, SocketLink, Target

QUICK_CLOSE = 0.5  # seconds: one probe per this long at most, and a new probe's probation


@dataclass
class Settings:
    retries: int = 6  # connection attempts after a restart (and at start) before giving up
    retry_interval: float = 5.0  # seconds between two attempts
    on_give_up: str = "exit"  # exit | reboot | a shell command
    stop_grace: float = 5.0  # a running script gets SIGTERM, then SIGKILL after this long


class Watch:
    def __init__(self, monitor: "Monitor", target: Target, script: list[str]):
        self.monitor = monitor
        self.loop: Loop = monitor.loop
        self.log: Log = monitor.log
        self.settings: Settings = monitor.settings
        self.target = target
        self.script = script
        self.state = "idle"
        self.tries = 0
        self.restarts = 0
        self.link: Link | None = None
        self.peer: procs.Process | None = None  # the server process, when the kernel names it
        self.child: procs.Process | None = None  # the restart script or give-up command
        self._attempt = None
        self._timer = None
        self._suspect: Lost | None = None  # the first end, while probing or confirming
        self._suspect_pid: int | None = None
        self._last_probe = float("-inf")
        self._rechecking = False  # this probe is the one immediate re-check after a reset
        self._killer = None

    # -- connecting ---------------------------------------------------------------------

    def start(self) -> None:
        self.tries = 0
        self._last_probe = float("-inf")  # a new connection's first probe never waits
        self._try_connect()

    def _try_connect(self) -> None:
        self.state = "connecting"
        self.tries += 1
        self._attempt = self.target.connect(self.loop, self._connected)

    def _connected(self, link: Link | None, why: str) -> None:
        self._attempt = None
        if link is not None:
            self.log.info(f"{self.target}: watching ({link.describe()})")
            self._watch(link)
            return
        retries = self.settings.retries
        if self.tries < retries:
            self.log.info(f"{self.target}: connect failed: {why} (try {self.tries} of {retries}, "
                          f"next in {self.settings.retry_interval:g} s)")
            self.state = "waiting"
            self._timer = self.loop.call_later(self.settings.retry_interval, self._try_connect)
        else:
            self.log.error(f"{self.target}: connect failed: {why}; giving up after "
                           f"{self.tries} tries")
            self.monitor.give_up(self, why)

    def _watch(self, link: Link) -> None:
        self.state = "watching"
        self.link = link
        if isinstance(link, ProcessLink):
            self.loop.watch_pidfd(link.proc.pidfd, self._process_exited)
            return
        self.loop.add_reader(link.sock.fileno(), self._socket_readable)
        new_peer, link.peer = link.peer, None
        if new_peer is not None and self.peer is not None and new_peer.ident == self.peer.ident:
            new_peer.close()  # the same server as before: keep the pidfd we watch already
        elif new_peer is not None:
            self._drop_peer()
            self.peer = new_peer
            self.loop.watch_pidfd(new_peer.pidfd, self._peer_exited)

    # -- noticing the end ---------------------------------------------------------------

    def _process_exited(self) -> None:
        pid = self.link.proc.pid
        self._drop_link()
        self._dead(Lost("exited", f"process {pid} exited"), pid)

    def _socket_readable(self) -> None:
        lost = self.link.read_event()
        if lost is not None:
            self._connection_ended(lost)

    def _connection_ended(self, lost: Lost) -> None:
        self._drop_link()
        if self.state == "confirming":  # the probe's connection, still on probation
            self._cancel_pending()
            first = self._suspect
            if self.peer is not None and self.peer.exited():
                self._peer_gone(first)
            elif lost.reason == "reset":  # perhaps a closing listener's queue: look again
                self._rechecking = True
                self._probe(first, self._suspect_pid, at_once=True)
            else:  # a living server accepted the probe, then closed it
                self._not_dead(first)
                self._probe(lost)
            return
        if self.peer is not None and self.peer.exited():
            self._peer_gone(lost)
            return
        self._probe(lost)

    def _peer_exited(self) -> None:
        """The server process's pidfd became readable (watch_pidfd has unregistered it)."""
        if self.state in ("watching", "confirming"):
            first = self._suspect if self.state == "confirming" else None
            lost = self.link.peek()
            if lost is not None:  # the usual death: its fds were closed before it exited
                self._cancel_pending()
                self._drop_link()
                self._peer_gone(first or lost)
                return
            # Our connection outlives the process: another process holds the server's end.
            pid = self.peer.pid
            self._cancel_pending()
            self._drop_link()
            self._drop_peer()
            self._probe(first or Lost("exited", f"server pid {pid} exited"), pid)
        elif self.state == "probing":
            self._cancel_pending()
            self._peer_gone(self._suspect)

    def _peer_gone(self, lost: Lost) -> None:
        pid = self.peer.pid
        self._drop_peer()
        self._dead(Lost(lost.reason, f"{lost.detail}; server pid {pid} exited"), pid)

    def _probe(self, lost: Lost, pid: int | None = None, *, at_once: bool = False) -> None:
        """Connection ended, server process alive or unknown: dead, or just an idle close?"""
        self.state = "probing"
        self._suspect = lost
        self._suspect_pid = pid
        if not at_once:
            self._rechecking = False
        delay = 0.0 if at_once else self._last_probe + QUICK_CLOSE - self.loop.clock.monotonic()
        if delay > 0:
            self._timer = self.loop.call_later(delay, self._probe_now)
        else:
            self._probe_now()

    def _probe_now(self) -> None:
        self._timer = None
        self._last_probe = self.loop.clock.monotonic()
        self._attempt = self.target.connect(self.loop, self._probed)

    def _probed(self, link: Link | None, why: str) -> None:
        self._attempt = None
        lost = self._suspect
        if link is None:
            pid = self.peer.pid if self.peer is not None else self._suspect_pid
            self._drop_peer()
            self._dead(Lost(lost.reason, f"{lost.detail}; reconnect failed: {why}"), pid)
            return
        self._watch(link)
        if self._rechecking:  # a listener still there after the reset: the server lives
            self._not_dead(lost)
            return
        self.state = "confirming"
        self._timer = self.loop.call_later(QUICK_CLOSE, self._confirmed)

    def _confirmed(self) -> None:
        self._timer = None
        self.state = "watching"
        self._not_dead(self._suspect)

    def _not_dead(self, lost: Lost) -> None:
        self._suspect = None
        self._suspect_pid = None
        self.log.info(f"{self.target}: {lost.detail}, but the server accepts a new connection: "
                      "not dead; watching again")

    # -- restarting ---------------------------------------------------------------------

    def _dead(self, lost: Lost, pid: int | None) -> None:
        self._suspect = None
        self._suspect_pid = None
        self.restarts += 1
        self.log.warning(f"{self.target}: server dead ({lost.detail}); running {self.script[0]}")
        env = dict(os.environ, SOCKMON_TARGET=self.target.text, SOCKMON_REASON=lost.reason,
                   SOCKMON_DETAIL=lost.detail, SOCKMON_PID=str(pid or ""))
        self._run(self.script, env, "restarting", self._script_done)

    def _run(self, argv: list[str], env: dict, state: str, done, shell: bool = False) -> None:
        try:
            self.child = procs.spawn(argv, env=env, shell=shell)
        except OSError as err:
            self.log.error(f"{self.target}: run {argv[0]}: {describe_oserror(err)}")
            self.state = state
            self.loop.call_later(0, done)
            return
        self.state = state
        self.loop.watch_pidfd(self.child.pidfd, done)

    def _reap(self, what: str) -> None:
        child, self.child = self.child, None
        if child is None:
            return  # it never started (already logged)
        status = child.wait(block=True)
        child.close()
        if self._killer is not None:
            self._killer.cancel()
            self._killer = None
        (self.log.info if status.success else self.log.warning)(
            f"{self.target}: {what} {status}")

    def _script_done(self) -> None:
        self._reap(f"restart script {self.script[0]}")
        if self.monitor.stopping:
            self.state = "stopped"
            self.monitor.watch_stopped(self)
        elif self.target.once:
            self.state = "retired"
            self.log.notice(f"{self.target}: a pid does not come back; this watch ends "
                            "(use pid:/PIDFILE or name:PROG to follow a restarted server)")
            self.monitor.watch_stopped(self)
        else:
            self.start()

    def run_give_up_command(self, command: str, why: str) -> None:
        env = dict(os.environ, SOCKMON_TARGET=self.target.text, SOCKMON_REASON="give-up",
                   SOCKMON_DETAIL=why, SOCKMON_PID="")
        self.log.warning(f"{self.target}: running the give-up command: {command}")
        self._run([command], env, "giving-up", self._give_up_done, shell=True)

    def _give_up_done(self) -> None:
        self._reap("give-up command")
        if self.monitor.stopping:
            self.state = "stopped"
            self.monitor.watch_stopped(self)
        else:
            self.start()  # a fresh round of tries: never a silent terminal state

    # -- stopping -----------------------------------------------------------------------

    def stop(self) -> bool:
        """Let go of everything; True when a script still has to end (watch_stopped follows)."""
        self._cancel_pending()
        self._drop_link()
        self._drop_peer()
        if self.child is None:
            self.state = "stopped"
            return False
        self.log.info(f"{self.target}: stopping {self.child.pid} (SIGTERM, SIGKILL after "
                      f"{self.settings.stop_grace:g} s)")
        self._killer = procs.escalate(self.loop, self.child, signum=signal.SIGTERM,
                                      grace=self.settings.stop_grace)
        return True

    def _cancel_pending(self) -> None:
        if self._attempt is not None:
            self._attempt.cancel()
            self._attempt = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop_link(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        fd = link.sock.fileno() if isinstance(link, SocketLink) else link.proc.pidfd
        self.loop.remove_reader(fd)
        link.close()

    def _drop_peer(self) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            self.loop.remove_reader(peer.pidfd)
            peer.close()


class Monitor:
    """All the watches, the give-up action, and a clean stop on SIGTERM/SIGINT/SIGHUP."""

    def __init__(self, loop: Loop, log: Log, settings: Settings,
                 pairs: list[tuple[Target, list[str]]], *, reboot=None):
        self.loop = loop
        self.log = log
        self.settings = settings
        self.stopping = False
        self.exit_code = 0
        self.watches = [Watch(self, target, script) for target, script in pairs]
        self._running = set(self.watches)
        if reboot is None:
            from hamtools.core.power import reboot
        self._reboot = reboot

    def start(self, *, signals: bool = True) -> None:
        if signals:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                self.loop.add_signal(signum, lambda s=signum: self._signalled(s))
        for watch in self.watches:
            watch.start()

    def run(self) -> int:
        self.start()
        self.loop.run()
        return self.exit_code

    def _signalled(self, signum: int) -> None:
        if not self.stopping:
            self.log.info(f"stopping on {procs.signal_name(signum)}")
            self.stop(0)

    def stop(self, code: int) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = code
        for watch in self.watches:
            if watch in self._running and not watch.stop():
                self._running.discard(watch)
        self._maybe_done()

    def watch_stopped(self, watch: Watch) -> None:
        self._running.discard(watch)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if not self._running:
            self.loop.stop()

    def give_up(self, watch: Watch, why: str) -> None:
        action = self.settings.on_give_up
        if action == "exit":
            self.log.error(f"{watch.target}: gave up; exiting")
            self.stop(1)
        elif action == "reboot":
            self.log.error(f"{watch.target}: gave up; rebooting")
            self.log.close()  # like the seed, let syslog have everything before the end
            try:
                self._reboot()
            except OSError as err:
                self.log.error(f"reboot: {describe_oserror(err)}")
                self.stop(1)
        else:
            watch.run_give_up_command(action, why)
