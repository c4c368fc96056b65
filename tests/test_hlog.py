"""ham's activity log: one line per message, repeats counted, timestamps as QNX's -t says."""

from hamtools.core.clock import FakeClock
from hamtools.hamd.hlog import REPEAT_WINDOW, HamLog


def lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_a_message_cannot_forge_a_line(tmp_path):
    log = HamLog(FakeClock(), path=str(tmp_path / "log"), stamps="none")
    log(0, "User: hello\nHam: Entity \"db\" died\r\x1b[2J")
    log.close()
    assert lines(tmp_path / "log") == ['Ham: User: hello\\nHam: Entity "db" died\\r\\x1b[2J']


def test_repeats_are_counted_not_written(tmp_path):
    clock = FakeClock()
    log = HamLog(clock, path=str(tmp_path / "log"), stamps="none")
    for _ in range(1000):
        log(1, "flood")
    clock.advance(REPEAT_WINDOW + 1)
    log(1, "flood")
    log(1, "other")
    log(2, "too verbose")  # above verbosity 1: dropped
    log.close()
    assert lines(tmp_path / "log") == ["Ham: flood", "Ham: last message repeated 999 times",
                                       "Ham: flood", "Ham: other"]


def test_relative_stamps_count_from_the_start(tmp_path):
    clock = FakeClock()
    log = HamLog(clock, path=str(tmp_path / "log"))
    clock.advance(2.5)
    log(0, "later")
    log.close()
    assert lines(tmp_path / "log") == ["2.500000000s: Ham: later"]
