"""hamtools.core.clock and hamtools.core.loop: timers on a fake clock, fds, signals, pidfds."""

import os
import signal
import socket
import time

import pytest

from hamtools.core.clock import Clock, FakeClock
from hamtools.core.loop import Loop


@pytest.fixture
def fake_loop():
    loop = Loop(FakeClock(autojump=True))
    yield loop
    loop.close()


def test_real_clock_reads_monotonic_and_wall_time():
    clock = Clock()
    assert abs(clock.monotonic() - time.monotonic()) < 1
    assert abs(clock.time() - time.time()) < 1


def test_fake_clock_moves_only_when_told():
    clock = FakeClock(start=10.0, wall=5000.0)
    assert (clock.monotonic(), clock.time()) == (10.0, 5000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (12.5, 5002.5)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_timers_fire_in_order_on_fake_time_without_sleeping(fake_loop):
    fired = []
    for delay in (30.0, 5.0, 12.0):
        fake_loop.call_later(delay, lambda d=delay: fired.append((d, fake_loop.clock.monotonic())))
    started = time.monotonic()
    assert fake_loop.run_until(lambda: len(fired) == 3, timeout=100)
    assert time.monotonic() - started < 1  # 30 s of fake time, no real waiting
    assert fired == [(5.0, 1005.0), (12.0, 1012.0), (30.0, 1030.0)]


def test_cancelled_timer_never_fires_and_due_timers_run_once(fake_loop):
    fired = []
    doomed = fake_loop.call_later(1.0, lambda: fired.append("doomed"))
    fake_loop.call_later(2.0, lambda: fired.append("kept"))
    doomed.cancel()
    fake_loop.run_until(lambda: fired, timeout=10)
    assert fired == ["kept"]


def test_timer_rearming_itself_does_not_starve_the_loop(fake_loop):
    count = []

    def again():
        count.append(1)
        if len(count) < 5:
            fake_loop.call_later(0, again)

    fake_loop.call_later(0, again)
    assert fake_loop.run_until(lambda: len(count) == 5, timeout=1)


def test_run_until_times_out_on_fake_clock(fake_loop):
    assert fake_loop.run_until(lambda: False, timeout=60) is False
    assert fake_loop.clock.monotonic() == pytest.approx(1060.0)


def test_manual_fake_clock_runs_timers_only_after_advance():
    clock = FakeClock()
    loop = Loop(clock)
    fired = []
    loop.call_later(3.0, lambda: fired.append(1))
    loop.run_once()
    assert fired == []
    clock.advance(3.0)
    loop.run_once()
    assert fired == [1]
    loop.close()


def test_reader_callback_and_removal():
    loop = Loop()
    a, b = socket.socketpair()
    got = []
    loop.add_reader(a.fileno(), lambda: got.append(a.recv(10)))
    b.send(b"hi")
    loop.run_once()
    assert got == [b"hi"]
    loop.remove_reader(a.fileno())
    b.send(b"again")
    loop.call_later(0.05, lambda: None)
    loop.run_once()
    assert got == [b"hi"]
    loop.close()
    a.close()
    b.close()


def test_reader_removed_by_earlier_callback_in_same_batch_does_not_run():
    loop = Loop()
    pairs = [socket.socketpair() for _ in range(2)]
    ran = []

    def first():
        ran.append("first")
        loop.remove_reader(pairs[1][0].fileno())

    def second():
        ran.append("second")
        loop.remove_reader(pairs[0][0].fileno())

    loop.add_reader(pairs[0][0].fileno(), first)
    loop.add_reader(pairs[1][0].fileno(), second)
    for _, writer in pairs:
        writer.send(b"x")
    loop.run_once()
    assert ran in (["first"], ["second"])
    loop.close()
    for pair in pairs:
        for sock in pair:
            sock.close()


def test_a_reader_added_first_runs_before_the_others_in_its_turn():
    loop = Loop()
    pairs = [socket.socketpair() for _ in range(6)]
    ran = []
    for n, (reader, _) in enumerate(pairs):
        loop.add_reader(reader.fileno(), lambda n=n, r=reader: ran.append(n) or r.recv(1), first=n == 4)
    for _, writer in reversed(pairs):  # the urgent one becomes readable neither first nor last
        writer.send(b"x")
    loop.run_once()
    assert sorted(ran) == list(range(6)) and ran[0] == 4
    loop.remove_reader(pairs[4][0].fileno())  # gone from the urgent set with its fd
    loop.add_reader(pairs[4][0].fileno(), lambda: ran.append("again") or pairs[4][0].recv(1))
    assert loop._first == set()
    loop.close()
    for pair in pairs:
        for sock in pair:
            sock.close()


def test_reader_and_writer_on_one_fd():
    loop = Loop()
    a, b = socket.socketpair()
    events = []
    loop.add_writer(a.fileno(), lambda: (events.append("w"), loop.remove_writer(a.fileno())))
    loop.add_reader(a.fileno(), lambda: events.append(("r", a.recv(10))))
    loop.run_once()
    assert events == ["w"]
    b.send(b"z")
    loop.run_once()
    assert events == ["w", ("r", b"z")]
    loop.close()
    a.close()
    b.close()


def test_signal_arrives_through_wakeup_fd_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR1)
    loop = Loop()
    got = []
    loop.add_signal(signal.SIGUSR1, lambda: got.append("usr1"))
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR1)  # merged: one callback per wakeup
    loop.run_once()
    assert got == ["usr1"]
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == before
    assert signal.set_wakeup_fd(-1) == -1  # the loop gave the wakeup fd back


def test_pidfd_watch_fires_once_when_process_exits():
    from hamtools.core.proc import spawn

    loop = Loop()
    child = spawn(["sleep", "0.1"])
    gone = []
    loop.watch_pidfd(child.pidfd, lambda: gone.append(child.wait()))
    assert loop.run_until(lambda: gone, timeout=5)
    assert str(gone[0]) == "exited 0"
    child.close()
    loop.close()


def test_idle_loop_makes_zero_wakeups():
    """No timer due: epoll_wait blocks with no timeout; one wakeup per real event only."""
    loop = Loop()
    a, b = socket.socketpair()
    loop.add_reader(a.fileno(), lambda: a.recv(10))
    loop.call_later(0.3, lambda: None)  # the only timer
    started = time.monotonic()
    loop.run_once()
    assert time.monotonic() - started >= 0.29
    assert loop.wakeups == 1  # slept through in one wait
    assert loop._next_timeout() is None  # nothing left: the next wait has no timeout at all
    loop.close()
    a.close()
    b.close()


def test_a_callback_that_raises_is_reported_and_the_loop_goes_on():
    from hamtools.core.clock import FakeClock
    from hamtools.core.loop import Loop

    seen, ran = [], []
    loop = Loop(FakeClock(autojump=True), on_error=seen.append)
    loop.call_later(1, lambda: 1 / 0)
    loop.call_later(2, lambda: ran.append("after"))
    assert loop.run_until(lambda: ran, timeout=5)
    assert [type(e) for e in seen] == [ZeroDivisionError]
    bare = Loop(FakeClock(autojump=True))
    bare.call_later(1, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        bare.run_until(lambda: False, timeout=5)
    loop.close()
    bare.close()
