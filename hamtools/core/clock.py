"""The injected clock: every piece of timing logic asks a Clock, never `time` directly.

`Clock` is the real one. `FakeClock` stands still until a test moves it, so retry intervals,
backoffs and heartbeat periods are tested without sleeping. With `autojump=True` it behaves
like trio's MockClock(autojump_threshold=0): when the event loop has nothing ready and would
block until a timer, the fake time jumps straight to that timer instead (the loop still
checks its file descriptors, without blocking, first).

Real processes and sockets take real time to answer, so a test that mixes them with fake
timers gives autojump a threshold instead: FakeClock(autojump=0.05) lets the loop wait up to
50 real milliseconds for a real event before the fake time jumps.

The loop talks to a clock through two hooks besides the readings:
  select_timeout(t)  how long the loop may really block when its next timer is t seconds away
                     (None = no timer: block until a file descriptor is ready)
  slept(t)           the loop waited that long for nothing; a fake clock may jump
"""

import time


class Clock:
    """The real clock: monotonic() for intervals and deadlines, time() for wall time (logs)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def select_timeout(self, timeout: float | None) -> float | None:
        return timeout

    def slept(self, seconds: float) -> None:
        pass


class FakeClock(Clock):
    """A clock that moves only when told to (advance) or, with autojump, to the next timer."""

    def __init__(self, start: float = 1000.0, wall: float = 1_700_000_000.0, *,
                 autojump: bool | float = False):
        self._now = float(start)
        self._wall_offset = float(wall) - float(start)
        # None: never jump; else the real seconds of quiet before a jump (True = at once)
        self.autojump: float | None = None if autojump is False else float(autojump is not True and autojump)

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self._now += seconds

    def select_timeout(self, timeout: float | None) -> float | None:
        # Fake time never makes the loop wait for real: a pending timer means "look, do not
        # block" (or, with an autojump threshold, "wait that long for real events at most").
        if timeout is None:
            return None
        return 0.0 if self.autojump is None else min(timeout, self.autojump)

    def slept(self, seconds: float) -> None:
        if self.autojump is not None and seconds > 0:
            self._now += seconds


REAL = Clock()
