"""Restart policy for services, as pure functions of times and exit statuses (no I/O).

For each death of a service: restart or not (RESTART always | on-failure | never, OTP's
permanent | transient | temporary), when (exponential backoff that resets after healthy
uptime), whether the restart intensity (max restarts in a window) is exceeded and what then
(log, stop, escalate to the group, reboot, exec: never a silent dead end), and whether the new
incarnation starts in seed 001's safe mode. Groups decide who else restarts: seed 001's
cascade (members restart alone, but a second failure within the window restarts them all),
OTP's one_for_all and rest_for_one. saved() and restored() carry a service's history and a
pending backoff over a restart of ham.
"""

CLEAN = "clean"  # exit code 0 (or a stop we asked for)


class History:
    """What the policy remembers about one service between deaths."""

    __slots__ = ("restarts", "streak", "started")

    def __init__(self):
        self.restarts: list[float] = []  # times of recent restarts (the intensity window)
        self.streak = 0  # consecutive short lives: the backoff exponent
        self.started: float | None = None  # when the current incarnation started

    def to_dict(self) -> dict:
        return {"restarts": self.restarts, "streak": self.streak, "started": self.started}

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        history = cls()
        history.restarts = [float(t) for t in data.get("restarts", [])]
        history.streak = int(data.get("streak", 0))
        history.started = data.get("started")
        return history


class Decision:
    __slots__ = ("restart", "delay", "limit", "safe", "uptime", "why")

    def __init__(self, restart: bool, delay: float = 0.0, limit: bool = False, safe: bool = False,
                 uptime: float | None = None, why: str = ""):
        self.restart, self.delay, self.limit, self.safe = restart, delay, limit, safe
        self.uptime, self.why = uptime, why

    def __repr__(self) -> str:
        return (f"Decision(restart={self.restart}, delay={self.delay:g}, limit={self.limit}, "
                f"safe={self.safe}, why={self.why!r})")


def wants_restart(mode: str, outcome: str) -> bool:
    """OTP's matrix: always restarts; on-failure restarts unless the exit was clean; never doesn't."""
    return mode == "always" or (mode == "on-failure" and outcome != CLEAN)


def decide(spec: dict, history: History, now: float, outcome: str) -> Decision:
    """A service died at `now` with `outcome` (CLEAN or a description of the failure)."""
    uptime = None if history.started is None else max(0.0, now - history.started)
    if not wants_restart(spec["restart"], outcome):
        return Decision(False, uptime=uptime, why=f"restart={spec['restart']}, exit {outcome}")
    if uptime is not None and uptime >= spec["reset_after"]:
        history.restarts.clear()  # a healthy life forgives the past
        history.streak = 0
    window_start = now - spec["restart_window"]
    history.restarts = [t for t in history.restarts if t > window_start]
    if len(history.restarts) >= spec["max_restarts"]:
        return Decision(False, limit=True, uptime=uptime,
                        why=f"{len(history.restarts)} restarts in {spec['restart_window']:g} s")
    delay = 0.0
    if history.streak > 0:
        delay = min(spec["backoff_max"], spec["backoff_initial"] * spec["backoff_factor"] ** (history.streak - 1))
    history.streak += 1
    safe = uptime is not None and uptime < spec["safe_after"]
    return Decision(True, delay=delay, safe=safe, uptime=uptime, why=f"exit {outcome}")


def started(history: History, now: float, when_restarted: bool) -> None:
    """Record a (re)start: it counts against the intensity only when it is a restart."""
    history.started = now
    if when_restarted:
        history.restarts.append(now)


def saved(history: History, backoff: dict | None, boot: str) -> dict:
    """What ham persists of a service's policy: its history and its pending backoff
    ({"until": monotonic deadline, "delay": the delay it was given, "safe": safe-mode uptime
    or None}), tagged with the boot (the kernel's boot_id) their monotonic times belong to."""
    return {"boot": boot, "history": history.to_dict(), "backoff": backoff}


def restored(data: dict | None, boot: str, now: float) -> tuple[History, float | None, float | None]:
    """(history, seconds left of a pending backoff or None, its safe-mode uptime) for a new ham
    at monotonic time now, from what saved() wrote.

    The times are CLOCK_MONOTONIC's. Within one boot (a takeover, a crash, `hamctl stop` and
    `ham` again) that clock kept counting while no ham ran and no wall-clock step (NTP, a board
    without an RTC starting in 1970) moved it, so the history is exact and a backoff goes on
    with what is left of it, the time ham was down included (never more than its delay). After
    a reboot that clock started again and nothing is left to resume: the boot outlasted any
    backoff, which is over (the restart is due now), and the history is forgiven, so each boot
    has the whole restart intensity (carried over, on_limit = reboot would loop)."""
    if not isinstance(data, dict):
        return History(), None, None
    backoff = data.get("backoff")
    if data.get("boot") != boot:
        return History(), (None if backoff is None else 0.0), None
    history = History.from_dict(data.get("history") or {})
    if backoff is None:
        return history, None, None
    left = min(float(backoff["delay"]), max(0.0, float(backoff["until"]) - now))
    return history, left, backoff.get("safe")


def safe_mode(spec: dict, argv: list[str], uptime: float) -> tuple[list[str], dict]:
    """Seed 001's flag for an incarnation that follows a short-lived one."""
    env = {"HAM_SAFE_MODE": "1", "HAM_PREV_UPTIME": str(int(uptime))}
    return (argv + [spec["safe_arg"]] if spec["safe_arg"] else argv), env


class GroupState:
    """Recent member failures of one group (cascade's window)."""

    __slots__ = ("failures",)

    def __init__(self):
        self.failures: list[tuple[float, str]] = []


def group_restarts(strategy: str, window: float, state: GroupState, now: float,
                   failed: str, members: list[str]) -> list[str]:
    """Which other members must be killed and restarted with the failed one (start order)."""
    if strategy == "one_for_all":
        return [m for m in members if m != failed]
    if strategy == "rest_for_one":
        return members[members.index(failed) + 1:] if failed in members else []
    # cascade (seed 001): individually, unless more than one member failed within the window
    state.failures = [(t, name) for t, name in state.failures if t > now - window]
    state.failures.append((now, failed))
    if len({name for _, name in state.failures}) > 1:
        state.failures.clear()
        return [m for m in members if m != failed]
    return []
