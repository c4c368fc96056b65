"""One-thread event loop: epoll file descriptors, a timer heap on the injected clock, signals.

Every input becomes a callback on this one thread (the s6/runit shape: one wait, one deadline):
  * file descriptors: add_reader / add_writer (sockets, pidfds, pipes), some served first;
  * processes: watch_pidfd (a pidfd is readable once the process has exited);
  * timers: call_later / call_at, a heap ordered by the clock's monotonic time;
  * signals: add_signal; the C-level handler writes the signal number into a non-blocking
    socketpair given to signal.set_wakeup_fd, the loop reads it like any other fd (the
    self-pipe trick; see linux_primitives.md #10: a Python handler must be installed, or the
    kernel's default action runs and nothing is written).

No polling: with no timer due the loop blocks in epoll_wait with no timeout, so an idle
daemon makes zero wakeups. `wakeups` counts the returns from epoll_wait, for tests.

Built on select.epoll, _signal and _socket directly: selectors, signal and socket would bring
collections and enum along, resident size the daemon is budgeted against (see core.cjson).
"""

import _signal
import _socket
import heapq
import itertools
import select

from hamtools.core.clock import REAL, Clock

_READ, _WRITE = select.EPOLLIN, select.EPOLLOUT


class Timer:
    """A pending call; cancel() is idempotent and safe from inside any callback."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, clock: Clock = REAL, on_error=None):
        """on_error(exception): a callback that raised is reported there and the loop goes
        on (a daemon must survive its own bugs); without it the exception propagates."""
        self.clock = clock
        self.on_error = on_error
        self.wakeups = 0
        self._epoll = select.epoll()
        self._callbacks: dict[int, list] = {}  # fd -> [on readable, on writable]
        self._first: set[int] = set()  # fds served first in a turn (add_reader's first)
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._running = False
        self._signal_callbacks: dict[int, object] = {}
        self._old_handlers: dict[int, object] = {}
        self._wakeup = None  # (reader, writer) sockets
        self._old_wakeup_fd = -1

    # -- file descriptors -------------------------------------------------------------

    def add_reader(self, fd: int, callback, first: bool = False) -> None:
        """first: in a turn where several fds are ready, this one's callback runs before the
        others' (an administrator's request is not kept behind a flood of strangers')."""
        self._set_interest(fd, 0, callback)
        if first:
            self._first.add(fd)

    def add_writer(self, fd: int, callback) -> None:
        self._set_interest(fd, 1, callback)

    def remove_reader(self, fd: int) -> None:
        self._set_interest(fd, 0, None)

    def remove_writer(self, fd: int) -> None:
        self._set_interest(fd, 1, None)

    def watch_pidfd(self, pidfd: int, callback) -> None:
        """Call callback once, when the process behind pidfd has exited (then stop watching)."""

        def fired() -> None:
            self.remove_reader(pidfd)
            callback()

        self.add_reader(pidfd, fired)

    def _set_interest(self, fd: int, slot: int, callback) -> None:
        callbacks = self._callbacks.get(fd)
        known = callbacks is not None
        if not known:
            if callback is None:
                return
            callbacks = self._callbacks[fd] = [None, None]
        callbacks[slot] = callback
        events = (_READ if callbacks[0] else 0) | (_WRITE if callbacks[1] else 0)
        if not events:
            del self._callbacks[fd]
            self._first.discard(fd)
            self._epoll.unregister(fd)
        elif known:
            self._epoll.modify(fd, events)
        else:
            self._epoll.register(fd, events)

    # -- timers -----------------------------------------------------------------------

    def call_at(self, when: float, callback) -> Timer:
        timer = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    def call_later(self, delay: float, callback) -> Timer:
        return self.call_at(self.clock.monotonic() + max(0.0, delay), callback)

    def _next_timeout(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - self.clock.monotonic())

    def _run_due_timers(self) -> None:
        now = self.clock.monotonic()
        due = []
        while self._timers and self._timers[0][0] <= now:
            due.append(heapq.heappop(self._timers)[2])
        for timer in due:  # collected first: a timer re-arming itself at `now` runs next pass
            if not timer.cancelled:
                timer.cancelled = True
                self._call(timer.callback)

    # -- signals ----------------------------------------------------------------------

    def add_signal(self, signum: int, callback) -> None:
        """Run callback on the loop's thread when signum arrives (main thread only)."""
        if self._wakeup is None:
            self._open_wakeup()
        if signum not in self._old_handlers:
            self._old_handlers[signum] = _signal.signal(signum, _ignore_in_handler)
        self._signal_callbacks[signum] = callback

    def remove_signal(self, signum: int) -> None:
        self._signal_callbacks.pop(signum, None)
        if signum in self._old_handlers:
            _signal.signal(signum, self._old_handlers.pop(signum))

    def _open_wakeup(self) -> None:
        reader, writer = _socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._old_wakeup_fd = _signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._wakeup = (reader, writer)
        self.add_reader(reader.fileno(), self._drain_signals)

    def _drain_signals(self) -> None:
        reader = self._wakeup[0]
        seen: list[int] = []
        while True:
            try:
                data = reader.recv(4096)
            except BlockingIOError:
                break
            if not data:
                break
            seen.extend(signum for signum in data if signum not in seen)
        for signum in seen:  # signals merge anyway (SIGCHLD): one call per signal per wakeup
            callback = self._signal_callbacks.get(signum)
            if callback is not None:
                self._call(callback)

    # -- running ----------------------------------------------------------------------

    def run_once(self) -> None:
        """Wait for the next event (or due timer) and run every callback that is ready."""
        timeout = self._next_timeout()
        wait = self.clock.select_timeout(timeout)
        events = self._epoll.poll(-1 if wait is None else wait)  # ms rounded up: no spinning
        self.wakeups += 1
        if not events and timeout is not None:
            self.clock.slept(timeout)
        if self._first and len(events) > 1:
            events.sort(key=lambda event: event[0] not in self._first)  # stable: the rest keep their order
        batch = [(fd, mask, tuple(self._callbacks.get(fd, (None, None)))) for fd, mask in events]
        for fd, mask, (on_read, on_write) in batch:
            # Hang-up and error count for both sides, as in selectors. A callback run earlier
            # in this batch may have removed or replaced this one (or closed the fd and
            # registered another under the same number): only what is still registered runs.
            if mask & ~_WRITE and on_read is not None and self._registered(fd, 0) is on_read:
                self._call(on_read)
            if mask & ~_READ and on_write is not None and self._registered(fd, 1) is on_write:
                self._call(on_write)
        self._run_due_timers()

    def _call(self, callback) -> None:
        try:
            callback()
        except Exception as err:
            if self.on_error is None:
                raise
            self.on_error(err)

    def _registered(self, fd: int, slot: int):
        callbacks = self._callbacks.get(fd)
        return None if callbacks is None else callbacks[slot]

    def run(self) -> None:
        """Run until stop() is called from a callback."""
        self._running = True
        while self._running:
            self.run_once()

    def run_until(self, predicate, timeout: float | None = None) -> bool:
        """Run until predicate() is true; False if `timeout` clock seconds passed first."""
        deadline = None if timeout is None else self.clock.monotonic() + timeout
        stopper = None if deadline is None else self.call_at(deadline, lambda: None)
        try:
            while not predicate():
                if deadline is not None and self.clock.monotonic() >= deadline:
                    return False
                self.run_once()
            return True
        finally:
            if stopper is not None:
                stopper.cancel()

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        for signum in list(self._old_handlers):
            self.remove_signal(signum)
        if self._wakeup is not None:
            _signal.set_wakeup_fd(self._old_wakeup_fd)
            self.remove_reader(self._wakeup[0].fileno())
            for sock in self._wakeup:
                sock.close()
            self._wakeup = None
        self._epoll.close()


def _ignore_in_handler(signum, frame) -> None:
    """The Python-level handler: the work happens on the loop, from the wakeup fd."""
