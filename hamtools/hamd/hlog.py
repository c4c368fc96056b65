"""ham's activity log, with QNX ham's options: verbosity (-v..., -V N, -d), a file (-f) or
stderr, timestamps (-t none|relative|absolute|shortabs), optional syslog. A message repeated
within a few seconds is counted instead of written again ("last message repeated N times"),
so a flood cannot fill a disk. What other users can make ham say as often as they like, in
ever different words (refused requests, malformed frames, strangers' notifications), goes
through limited(): a few lines per kind and uid per window, then one line with the count.
"""

import sys
import time

REPEAT_WINDOW = 10.0  # seconds
LIMITED_LINES = 5  # limited(): lines per key per REPEAT_WINDOW; the rest are counted
LIMITED_KEYS = 256  # keys remembered at once (each names a uid: a bounded set)


class HamLog:
    def __init__(self, clock, *, verbosity: int = 1, path: str | None = None,
                 stamps: str = "relative", syslog=None):
        self.clock = clock
        self.verbosity = verbosity
        self.stamps = stamps
        self.syslog = syslog  # a hamtools.core.log.Syslog, or None
        self.started = clock.monotonic()
        self.stream = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr
        self._last: str | None = None
        self._last_at = 0.0
        self._repeats = 0
        self._limits: dict[str, list] = {}  # key -> [window start, lines written, lines left out]

    def __call__(self, level: int, message: str) -> None:
        if level > self.verbosity:
            return
        now = self.clock.monotonic()
        if message == self._last and now - self._last_at < REPEAT_WINDOW:
            self._repeats += 1
            return
        self._flush_repeats()
        self._last, self._last_at = message, now
        self._write(message)

    def limited(self, level: int, key: str, message: str) -> None:
        """message, unless LIMITED_LINES of this key were written in the current window; key
        says what they are and whose ("refused requests from uid 1000"): the line closing a
        window counts those left out under that name."""
        if level > self.verbosity:
            return
        now = self.clock.monotonic()
        entry = self._limits.get(key)
        if entry is None or now - entry[0] >= REPEAT_WINDOW:
            if entry is not None:
                self._flush_limited(key, entry)
            elif len(self._limits) >= LIMITED_KEYS:
                self._expire(now)
            entry = self._limits[key] = [now, 0, 0]
        if entry[1] < LIMITED_LINES:
            entry[1] += 1
            self(level, message)
        else:
            entry[2] += 1

    def _flush_limited(self, key: str, entry: list) -> None:
        if entry[2]:
            self._flush_repeats()
            self._last = None
            self._write(f"{entry[2]} more {key} not logged (at most {LIMITED_LINES} "
                        f"in {REPEAT_WINDOW:g} s)")
            entry[2] = 0

    def _expire(self, now: float) -> None:
        for key, entry in list(self._limits.items()):
            if now - entry[0] >= REPEAT_WINDOW or len(self._limits) >= LIMITED_KEYS:
                self._flush_limited(key, entry)
                del self._limits[key]

    def _flush_repeats(self) -> None:
        if self._repeats:
            self._write(f"last message repeated {self._repeats} times")
            self._repeats = 0

    def _write(self, message: str) -> None:
        # One event, one line: what clients put in messages (log actions, names) cannot
        # forge lines of ham's own.
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        line = f"{self._stamp()}Ham: {message}\n"
        try:
            self.stream.write(line)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed or full log must not stop ham
        if self.syslog is not None:
            self.syslog.send(6, message)

    def _stamp(self) -> str:
        if self.stamps == "none":
            return ""
        if self.stamps == "relative":
            elapsed = self.clock.monotonic() - self.started
            return f"{int(elapsed)}.{int(elapsed % 1 * 1e9):09d}s: "
        wall = self.clock.time()
        text = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(wall))
        return f"{text}:{int(wall % 1 * 1e9)}: " if self.stamps == "absolute" else f"{text}: "

    def close(self) -> None:
        for key, entry in self._limits.items():
            self._flush_limited(key, entry)
        self._flush_repeats()
        if self.stream is not sys.stderr:
            self.stream.close()

