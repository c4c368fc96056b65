"""ham's activity log: one line per message, repeats counted, timestamps as QNX's -t says."""

from hamtools.core.clock import FakeClock
from hamtools.hamd.hlog import LIMITED_KEYS, LIMITED_LINES, REPEAT_WINDOW, HamLog


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


def test_limited_lines_are_bounded_per_key_and_counted(tmp_path):
    """What others can make ham say in ever different words: LIMITED_LINES per key per window,
    then one line counting the rest, also when the kinds alternate (which defeats the repeat
    count)."""
    clock = FakeClock()
    log = HamLog(clock, path=str(tmp_path / "log"), stamps="none")
    for n in range(1000):
        log.limited(1, "refused requests of uid 7", f"refused heartbeat from pid {n}")
        log.limited(1, "malformed messages of uid 7", f"bad frame {n}")
    log.limited(2, "refused requests of uid 7", "too verbose")  # above verbosity 1: dropped
    clock.advance(REPEAT_WINDOW)
    log.limited(1, "refused requests of uid 7", "refused heartbeat from pid 1000")
    log.close()
    assert lines(tmp_path / "log") == (
        [line for n in range(LIMITED_LINES)
         for line in (f"Ham: refused heartbeat from pid {n}", f"Ham: bad frame {n}")]
        + [f"Ham: {1000 - LIMITED_LINES} more refused requests of uid 7 not logged "
           f"(at most {LIMITED_LINES} in {REPEAT_WINDOW:g} s)",
           "Ham: refused heartbeat from pid 1000",
           f"Ham: {1000 - LIMITED_LINES} more malformed messages of uid 7 not logged "
           f"(at most {LIMITED_LINES} in {REPEAT_WINDOW:g} s)"])


def test_limited_keys_are_bounded(tmp_path):
    clock = FakeClock()
    log = HamLog(clock, path=str(tmp_path / "log"), stamps="none")
    for uid in range(LIMITED_KEYS * 4):
        log.limited(1, f"refused requests of uid {uid}", f"refused pid {uid}")
    assert len(log._limits) <= LIMITED_KEYS
    log.close()
    assert len(lines(tmp_path / "log")) == LIMITED_KEYS * 4
