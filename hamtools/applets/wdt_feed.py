"""`wdt feed`: keep a watchdog fed, compatible with busybox's `watchdog` applet.

    wdt feed [-T N[ms]] [-t N[ms]] [-F] [--nowayout] [-p FILE] [DEV]

As busybox: -T timeout (default 60 s), -t keepalive period (default half the timeout), an
"ms" suffix for milliseconds; fork into the background *before* opening the device unless
-F; WDIOS_ENABLECARD then WDIOC_SETTIMEOUT, failures only warned about; one NUL byte per
period. Unlike busybox, the command that daemonizes waits until the daemon has the device
set up, so an error (EBUSY, ENOENT...) still reaches the caller and its exit status, and
a path that is no watchdog (a file, a disk, /dev/null) is refused without a byte written.
SIGTERM/SIGINT/SIGHUP stop it with the magic close; with --nowayout it closes without the
'V', so the watchdog stays armed and resets the machine unless someone else feeds it.
"""

import os
import signal
import sys
import time

from hamtools.applets import wdt
from hamtools.core import watchdog
from hamtools.core.errors import EXIT_OK, EXIT_USAGE, AppletError, describe_oserror

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def parse_ms(text: str, what: str, minimum_ms: int) -> int:
    """busybox's N[ms] in milliseconds: whole seconds, or milliseconds with the suffix; from
    minimum_ms up to the longest timeout the kernel takes, else a one-line usage error."""
    digits, scale = (text[:-2], 1) if text.endswith("ms") else (text, 1000)
    value = wdt.whole_number(digits)
    if value is None or not minimum_ms <= value * scale <= watchdog.MAX_TIMEOUT * 1000:
        low = f"{minimum_ms // 1000} s" if minimum_ms % 1000 == 0 else f"{minimum_ms}ms"
        raise AppletError(f"feed: invalid {what} '{text}': expected N (seconds) or Nms, "
                          f"{low}..{watchdog.MAX_TIMEOUT} s", EXIT_USAGE)
    return value * scale


def feed(device: str | None, timeout_text: str, interval_text: str | None, foreground: bool,
         nowayout: bool, pidfile: str | None) -> int:
    # The kernel takes whole seconds: a timeout under 1 s is no timeout at all.
    timeout_ms = parse_ms(timeout_text, "timeout -T", 1000)
    interval_ms = parse_ms(interval_text, "period -t", 1) if interval_text else None
    device = wdt.resolve_device(device)
    daemon = _Daemon() if not foreground else None
    try:
        opened, period = _setup(device, timeout_ms, interval_ms, pidfile)
    except AppletError as err:
        if daemon:
            daemon.failed(err.code)
        raise
    if daemon:
        daemon.ready()
    _keep_fed(opened, period)
    if nowayout:
        opened.close()  # no 'V': it stays armed
    else:
        opened.magic_close()
    if pidfile:
        _remove(pidfile)
    return EXIT_OK


def _setup(device: str, timeout_ms: int, interval_ms: int | None, pidfile: str | None):
    # Blocked from before the open: a stop signal is taken by sigtimedwait, never lost, and
    # none can end us between the open and the loop (that would leave it armed).
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return _open_and_start(device, timeout_ms, interval_ms, pidfile)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        raise


def _open_and_start(device: str, timeout_ms: int, interval_ms: int | None, pidfile: str | None):
    try:
        opened = watchdog.Watchdog.open(device)  # refuses, unwritten, what is no watchdog
    except OSError as err:
        raise wdt.open_error("feed", device, err) from None
    timeout = _start(opened, timeout_ms // 1000)
    period = interval_ms / 1000 if interval_ms else (timeout or timeout_ms / 1000) / 2
    if timeout and period >= timeout:
        _warn(f"feeding every {period:g} s is not more often than the {timeout} s timeout: "
              "the watchdog will fire")
    if pidfile:
        try:
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        except OSError as err:
            opened.magic_close()
            raise AppletError(f"feed: pidfile {pidfile}: {describe_oserror(err)}") from None
    return opened, period


def _start(opened: watchdog.Watchdog, seconds: int) -> int | None:
    """ENABLECARD and SETTIMEOUT as busybox does them (warn, go on); the timeout in force."""
    try:
        opened.set_options(watchdog.WDIOS_ENABLECARD)
    except OSError as err:
        if not watchdog.is_unsupported(err):  # opening started it anyway
            _warn(f"enable {opened.path}: {watchdog.describe_error(err)}")
    try:
        return opened.set_timeout(seconds)
    except OSError as err:
        _warn(f"set timeout {seconds} on {opened.path}: {watchdog.describe_error(err)}")
    try:
        return opened.get_timeout()
    except OSError:
        return None


def _keep_fed(opened: watchdog.Watchdog, period: float) -> None:
    """Ping every period until a stop signal arrives."""
    due = time.monotonic()
    while True:
        try:
            opened.ping()
        except OSError as err:  # device gone: nothing left to feed; do not pretend
            raise AppletError(f"feed: ping {opened.path}: {watchdog.describe_error(err)}") from None
        due += period
        now = time.monotonic()
        if due < now:  # we were stopped or starved: feed on from now, no burst
            due = now
        if signal.sigtimedwait(STOP_SIGNALS, due - now) is not None:
            return


class _Daemon:
    """Forks into the background at once; the caller's process lives on until ready() or
    failed(code), then exits 0 or code.

    So the device is opened by the daemon (busybox's order) and yet an error such as EBUSY
    still reaches the caller's terminal and exit status: the daemon keeps the caller's stderr
    until it is ready, and the caller waits for the daemon to close the pipe (a failing
    daemon closes it only at its exit, after its error line).
    """

    def __init__(self):
        read_end, self._pipe = os.pipe()
        child = os.fork()
        if child > 0:
            os.close(self._pipe)
            os.waitpid(child, 0)  # the intermediate process exits at once
            status = os.read(read_end, 1)
            while os.read(read_end, 64):
                pass
            os._exit(status[0] if status else 1)
        os.close(read_end)
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        os.chdir("/")
        self._null = os.open(os.devnull, os.O_RDWR)
        os.dup2(self._null, 0)
        os.dup2(self._null, 1)

    def ready(self) -> None:
        os.write(self._pipe, b"\0")
        os.close(self._pipe)
        sys.stderr.flush()
        os.dup2(self._null, 2)

    def failed(self, code: int) -> None:
        os.write(self._pipe, bytes([code]))


def _warn(text: str) -> None:
    sys.stderr.write(f"wdt: feed: {text}\n")


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
