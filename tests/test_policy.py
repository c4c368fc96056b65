"""The restart policy as pure functions: the OTP-style matrix, intensity, backoff with an
injected clock (plain numbers), safe mode, and the group strategies."""

import pytest

from hamtools.hamd import policy
from hamtools.hamd.policy import CLEAN, GroupState, History, decide, group_restarts, started

BASE = {"restart": "always", "max_restarts": 3, "restart_window": 60.0, "backoff_initial": 0.1,
        "backoff_max": 2.0, "backoff_factor": 2.0, "reset_after": 30.0, "safe_after": 10.0,
        "safe_arg": None}


def spec(**changes):
    return {**BASE, **changes}


@pytest.mark.parametrize("mode,outcome,expected", [
    ("always", CLEAN, True), ("always", "exited 1", True), ("always", "killed by SIGSEGV", True),
    ("on-failure", CLEAN, False), ("on-failure", "exited 1", True), ("on-failure", "killed by SIGKILL", True),
    ("never", CLEAN, False), ("never", "exited 1", False), ("never", "killed by SIGSEGV", False),
])
def test_exit_reason_by_policy_matrix(mode, outcome, expected):
    history = History()
    started(history, 0.0, False)
    assert decide(spec(restart=mode), history, 100.0, outcome).restart is expected


def test_backoff_doubles_up_to_the_cap_and_resets_after_healthy_uptime():
    s, history, now, delays = spec(max_restarts=100), History(), 0.0, []
    started(history, now, False)
    for _ in range(7):
        now += 1.0  # each life lasts one second: short
        decision = decide(s, history, now, "exited 1")
        delays.append(decision.delay)
        now += decision.delay
        started(history, now, True)
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    now += 31.0  # a healthy life longer than reset_after
    assert decide(s, history, now, "exited 1").delay == 0.0


def test_intensity_limit_within_the_window_then_forgiven_after_it():
    s, history = spec(max_restarts=3, restart_window=60.0), History()
    started(history, 0.0, False)
    for t in (1.0, 2.0, 3.0):
        assert decide(s, history, t, "exited 1").restart
        started(history, t, True)
    limited = decide(s, history, 4.0, "exited 1")
    assert (limited.restart, limited.limit) == (False, True) and "3 restarts in 60 s" in limited.why
    assert decide(s, history, 64.0, "exited 1").restart  # the old restarts left the window


def test_safe_mode_after_a_short_life_only():
    s, history = spec(safe_after=10.0, safe_arg="--safe"), History()
    started(history, 0.0, False)
    quick = decide(s, history, 3.0, "exited 1")
    assert quick.safe and quick.uptime == 3.0
    argv, env = policy.safe_mode(s, ["/bin/worker", "-v"], quick.uptime)
    assert argv == ["/bin/worker", "-v", "--safe"]
    assert env == {"HAM_SAFE_MODE": "1", "HAM_PREV_UPTIME": "3"}
    started(history, 3.0, True)
    assert not decide(s, history, 20.0, "exited 1").safe
    assert policy.safe_mode(spec(), ["/bin/w"], 2.5)[0] == ["/bin/w"]  # no SAFE_ARG: env only


def test_cascade_restarts_everyone_only_when_two_members_fail_within_the_window():
    members, state = ["a", "b", "c"], GroupState()
    assert group_restarts("cascade", 60.0, state, 0.0, "a", members) == []
    assert group_restarts("cascade", 60.0, state, 10.0, "a", members) == []  # same member again
    assert group_restarts("cascade", 60.0, state, 20.0, "b", members) == ["a", "c"]
    assert group_restarts("cascade", 60.0, state, 200.0, "c", members) == []  # window passed


def test_one_for_all_and_rest_for_one():
    members = ["db", "api", "web"]
    assert group_restarts("one_for_all", 60.0, GroupState(), 0.0, "api", members) == ["db", "web"]
    assert group_restarts("rest_for_one", 60.0, GroupState(), 0.0, "db", members) == ["api", "web"]
    assert group_restarts("rest_for_one", 60.0, GroupState(), 0.0, "web", members) == []


def test_history_round_trips():
    history = History()
    started(history, 5.0, True)
    history.streak = 2
    again = History.from_dict(history.to_dict())
    assert (again.restarts, again.streak, again.started) == ([5.0], 2, 5.0)


def test_a_new_ham_in_the_same_boot_resumes_history_and_the_rest_of_a_backoff():
    history = History()
    started(history, 10.0, True)
    history.streak = 3
    data = policy.saved(history, {"until": 50.0, "delay": 8.0, "safe": 2.5}, boot="b1")
    again, left, safe = policy.restored(data, "b1", now=47.0)  # 5 of its 8 s passed meanwhile
    assert (again.restarts, again.streak, again.started) == ([10.0], 3, 10.0)
    assert (left, safe) == (3.0, 2.5)
    assert policy.restored(data, "b1", now=60.0)[1] == 0.0  # it ran out while no ham watched
    # a deadline further away than the delay it was given (a corrupt or foreign file): never
    # more than the delay, so a restart can be late but not lost
    assert policy.restored(data, "b1", now=-1000.0)[1] == 8.0


def test_after_a_reboot_the_history_is_forgiven_and_a_backoff_is_over():
    history = History()
    started(history, 10.0, True)
    history.streak = 4
    data = policy.saved(history, {"until": 500.0, "delay": 30.0, "safe": None}, boot="before")
    again, left, safe = policy.restored(data, "after", now=3.0)  # monotonic restarted at boot
    assert (again.restarts, again.streak, again.started, left, safe) == ([], 0, None, 0.0, None)
    quiet = policy.saved(history, None, boot="before")
    assert policy.restored(quiet, "after", now=3.0)[1] is None  # no backoff: nothing due


def test_nothing_saved_is_a_fresh_start():
    again, left, safe = policy.restored(None, "b1", now=5.0)
    assert (again.restarts, again.streak, again.started, left, safe) == ([], 0, None, None, None)
    assert policy.restored(policy.saved(History(), None, "b1"), "b1", 5.0)[1] is None
