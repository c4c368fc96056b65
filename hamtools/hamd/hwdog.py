"""ham's hardware watchdog (seed 001's "hardware stall timer"; SPEC §3).

ham opens the device (`--watchdog DEV`), sets its timeout when asked (`--watchdog-timeout`)
and feeds it every third of the timeout from its event loop. While a hung worker's kill is
pending (the kill signal sent, the process not yet dead) ham does not feed it: a worker that
cannot be killed resets the board. Before it stops feeding, ham writes down who is to blame,
in a file that outlives the reset (`--watchdog-record`, default /var/lib/ham/watchdog.json,
with the boot id); the next ham, one boot later, reports that reset and its culprit in
`hamctl status` (with what the driver's boot status says, where it has one).

Leaving: SIGTERM from init re-arms it with the shutdown timeout (default 10 min, systemd's
RebootWatchdogSec) and exits without the magic close, so a shutdown that hangs still resets
the board; `hamctl stop` (ham_stop) closes it with the magic 'V'.
"""

import os

from hamtools.core import bootid, cjson, watchdog
from hamtools.core.atomic import read_or_none, write_atomic

DEFAULT_RECORD = "/var/lib/ham/watchdog.json"
SHUTDOWN_TIMEOUT = 600


class HardwareWatchdog:
    def __init__(self, loop, log, device: watchdog.Watchdog, *, timeout: int | None = None,
                 shutdown_timeout: int = SHUTDOWN_TIMEOUT, record: str = DEFAULT_RECORD):
        """device: opened (that armed it). Raises OSError when the driver refuses the timeout."""
        self.loop, self.log, self.device = loop, log, device
        self.record_path = record
        self.shutdown_timeout = shutdown_timeout
        support = _quietly(device.get_support, None)
        self.identity = support.identity if support else "watchdog"
        self.can_set = bool(support and support.options & watchdog.WDIOF_SETTIMEOUT)
        if timeout is not None:
            self.timeout = device.set_timeout(timeout)
        else:
            self.timeout = device.get_timeout()
        self.bootstatus = _quietly(device.get_bootstatus, None)
        self.interval = max(self.timeout / 3, 0.1)  # at least every timeout/2, with room to spare
        self.pending: dict[str, int | None] = {}  # entity name -> pid, while its kill is pending
        self.last_reset = self._previous_reset()
        self.fed = 0
        self._timer = None
        self.feed()

    @classmethod
    def open(cls, loop, log, path: str, inherited: int | None = None, **settings) -> "HardwareWatchdog":
        """inherited: the device as the ham before us held it (hamd.handover): it is never
        closed in a takeover, so it neither stops nor logs an unexpected close."""
        device = _inherited(inherited, path) if inherited is not None else None
        if device is None:
            device = watchdog.Watchdog.open(path)
        try:
            return cls(loop, log, device, **settings)
        except BaseException:
            device.close()  # still armed unless the driver lacks magic close: the board decides
            raise

    # ---- feeding -------------------------------------------------------------------------

    def feed(self) -> None:
        self._timer = None
        if self.device.fd < 0:
            return
        if not self.pending:
            try:
                self.device.ping()
                self.fed += 1
            except OSError as err:
                self.log(0, f"watchdog {self.device.path}: feeding failed: {err.strerror}")
        self._timer = self.loop.call_later(self.interval, self.feed)

    def kill_pending(self, name: str, pending: bool, pid: int | None = None) -> None:
        if pending and name not in self.pending:
            if not self.pending:
                self._blame(name, pid)  # on disk before the feeding stops
                self.log(0, f"watchdog: not fed while {name}'s kill is pending: the board resets "
                            f"in {self.timeout} s unless {name} dies")
            self.pending[name] = pid
        elif not pending and self.pending.pop(name, False) is not False and not self.pending:
            self.log(0, f"watchdog: {name} is dead: feeding again")
            self._cancel_timer()
            self.feed()

    def _blame(self, name: str, pid: int | None) -> None:
        record = {"culprit": name, "pid": pid, "device": self.device.path, "identity": self.identity,
                  "timeout": self.timeout, "boot_id": bootid.boot_id(), "time": self.loop.clock.time()}
        try:
            os.makedirs(os.path.dirname(self.record_path), exist_ok=True)
            write_atomic(self.record_path, cjson.dumps(record).encode(), 0o644)
        except OSError as err:
            self.log(0, f"watchdog: cannot record the culprit in {self.record_path}: {err.strerror}")

    def _previous_reset(self) -> dict | None:
        """The culprit an earlier boot recorded (this boot is the one that reset brought)."""
        reported = self.record_path + ".last"
        raw = read_or_none(self.record_path)
        if raw is not None:
            try:
                record = cjson.loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("boot_id") != bootid.boot_id():
                record["reported_in_boot"] = bootid.boot_id()
                record["bootstatus_says_watchdog"] = (None if self.bootstatus is None
                                                      else bool(self.bootstatus & watchdog.RESET_CAUSES))
                try:
                    write_atomic(reported, cjson.dumps(record).encode(), 0o644)
                    os.unlink(self.record_path)
                except OSError:
                    pass
                self.log(0, f"watchdog: the last boot ended in a watchdog reset, blamed on "
                            f"{record.get('culprit')} (pid {record.get('pid')})")
                return record
        raw = read_or_none(reported)
        try:
            record = cjson.loads(raw) if raw is not None else None
        except ValueError:
            return None
        return record if isinstance(record, dict) and record.get("reported_in_boot") == bootid.boot_id() else None

    # ---- leaving -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """SIGTERM at shutdown: the shutdown timeout, and closed without 'V' (it stays armed)."""
        self._cancel_timer()
        if self.device.fd < 0:
            return
        if self.can_set:
            try:
                self.device.set_timeout(self.shutdown_timeout)
            except OSError as err:
                self.log(0, f"watchdog: cannot set the shutdown timeout: {err.strerror}")
        else:
            self.device.ping()
        self.log(1, f"watchdog {self.device.path} left armed ({self.shutdown_timeout} s) for the shutdown")
        self.device.close()

    def disarm(self) -> None:
        """hamctl stop: the magic close."""
        self._cancel_timer()
        if self.device.fd >= 0:
            self.device.magic_close()
            self.log(1, f"watchdog {self.device.path} closed with the magic 'V'")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def status(self) -> dict:
        return {"device": self.device.path, "identity": self.identity, "timeout": self.timeout,
                "feeding": not self.pending and self.device.fd >= 0, "pending_kills": sorted(self.pending),
                "fed": self.fed, "last_reset": self.last_reset}


def _quietly(call, default):
    try:
        return call()
    except OSError:
        return default


def _inherited(fd: int, path: str) -> watchdog.Watchdog | None:
    import stat

    try:
        if stat.S_ISCHR(os.fstat(fd).st_mode):
            return watchdog.Watchdog(fd, path)
    except OSError:
        pass
    return None
