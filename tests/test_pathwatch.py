"""core.pathwatch: a path appearing is seen through inotify, levels below anything existing."""

import os
import threading
import time

from hamtools.core.loop import Loop
from hamtools.core.pathwatch import PathWatch


def test_a_deep_path_is_seen_when_it_appears_without_polling(tmp_path):
    loop = Loop()
    seen = []
    target = tmp_path / "a" / "b" / "ready"
    watch = PathWatch(loop, str(target), lambda: seen.append(time.monotonic()))

    def make() -> None:
        time.sleep(1.0)  # a poll every 50 ms would wake 20 times in here
        (tmp_path / "a").mkdir()
        time.sleep(0.1)
        (tmp_path / "a" / "b").mkdir()
        time.sleep(0.1)
        (tmp_path / "a" / "b" / ".tmp").write_text("x")
        os.rename(tmp_path / "a" / "b" / ".tmp", target)  # appears by rename (IN_MOVED_TO)
        made.append(time.monotonic())

    made: list[float] = []
    maker = threading.Thread(target=make)
    maker.start()
    try:
        assert loop.run_until(lambda: seen, timeout=5)
    finally:
        maker.join()
        watch.close()
        loop.close()
    assert seen[0] - made[0] < 1.0
    # an event each (two mkdirs, a create, a rename, the old watches' IN_IGNORED), never a tick
    assert loop.wakeups <= 10


def test_an_existing_path_is_seen_at_once_and_close_is_idempotent(tmp_path):
    loop = Loop()
    seen = []
    watch = PathWatch(loop, str(tmp_path), lambda: seen.append(1))
    assert seen == [1] and watch.fd == -1
    watch.close()
    loop.close()


def test_the_watched_directory_replaced_under_it(tmp_path):
    loop = Loop()
    seen = []
    (tmp_path / "d").mkdir()
    watch = PathWatch(loop, str(tmp_path / "d" / "ready"), lambda: seen.append(1))
    (tmp_path / "d").rmdir()
    (tmp_path / "d").mkdir()  # a new directory of the same name: its own watch is needed
    loop.run_until(lambda: False, timeout=0.2)
    (tmp_path / "d" / "ready").touch()
    try:
        assert loop.run_until(lambda: seen, timeout=5)
    finally:
        watch.close()
        loop.close()
