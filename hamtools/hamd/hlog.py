"""ham's activity log, with QNX ham's options: verbosity (-v..., -V N, -d), a file (-f) or
stderr, timestamps (-t none|relative|absolute|shortabs), optional syslog. A message repeated
within a few seconds is counted instead of written again ("last message repeated N times"),
so a flood cannot fill a disk.
"""

import sys
import time

REPEAT_WINDOW = 10.0  # seconds


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
        self._flush_repeats()
        if self.stream is not sys.stderr:
            self.stream.close()

