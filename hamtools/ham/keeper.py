"""Self-attached entities outlive a restart of ham (a takeover by its guardian, `hamctl
reexec`, a ham started again): the application does not notice.

Each self-attached entity has a connection of its own (closing it is the entity's death, to
ham). One daemon thread per process polls those connections for hang-up only — never for
data, so it does not interfere with a request in flight on the application's thread. When
ham goes away, the thread connects again (the new ham's listening socket is the same one, so
the connect waits in its backlog during a takeover; if no ham is there it retries, from
10 ms up to once a second) and repeats ham_attach_self with the same arguments: the new ham
knows the entity from its saved state and the process by its pid, so the entity, its
conditions and actions are the same ones. Heartbeats sent while the connection is down are
dropped, as when ham is busy; the new ham starts each heartbeat period afresh.
"""

import _signal
import os
import select
import threading
import time

from hamtools.ham.client import Connection

RETRY_FIRST, RETRY_MAX = 0.01, 1.0


class Keeper:
    def __init__(self, entities: dict[str, Connection]):
        self.entities = entities  # name -> connection: the library's own table, shared
        self.arguments: dict[str, dict] = {}  # name -> what attach_self was sent
        self.pid = os.getpid()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._thread = threading.Thread(target=self._run, name="ham-keeper", daemon=True)
        # Born with every signal blocked: a signal sent to the process then goes to one of the
        # application's threads, never to this one, where a signal the application blocks to
        # read it from a signalfd or sigwait would take its default action (often death).
        mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
        try:
            self._thread.start()
        finally:
            _signal.pthread_sigmask(_signal.SIG_SETMASK, mask)

    def attached(self, name: str, arguments: dict) -> None:
        self.arguments[name] = arguments
        self._wake()

    def detached(self, name: str) -> None:
        self.arguments.pop(name, None)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass  # it has a wake-up pending already

    def _run(self) -> None:
        while True:
            poller = select.poll()
            poller.register(self._wake_read, select.POLLIN)
            watched = {}
            for name, conn in list(self.entities.items()):
                fd = conn.sock.fileno()
                if fd >= 0 and name in self.arguments:
                    poller.register(fd, 0)  # POLLHUP and POLLERR come without asking
                    watched[fd] = name
            for fd, _ in poller.poll():
                if fd == self._wake_read:
                    try:
                        os.read(self._wake_read, 256)
                    except BlockingIOError:
                        pass
                elif fd in watched:
                    self._reattach(watched[fd])

    def _reattach(self, name: str) -> None:
        delay = RETRY_FIRST
        while name in self.arguments:
            conn = _attached_again(self.arguments[name])
            if conn is None:
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            old = self.entities.get(name)
            if name not in self.arguments or old is None:  # detached meanwhile
                conn.close()
                return
            self.entities[name] = conn
            old.close()
            return


def _attached_again(arguments: dict) -> Connection | None:
    """A new connection with attach_self repeated on it, or None while no ham answers."""
    try:
        conn = Connection(prefer_control=False)
    except OSError:
        return None
    try:
        conn.request("attach_self", arguments)
    except OSError:
        conn.close()
        return None
    return conn
