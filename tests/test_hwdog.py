"""ham's hardware watchdog logic on a fake driver and a fake clock (the real drivers: the VM
tests in test_ham_vm.py)."""

import json

import pytest

from hamtools.core import watchdog
from hamtools.core.clock import FakeClock
from hamtools.core.loop import Loop
from hamtools.hamd import hwdog
from tests.wdt_fakes import FakeDriver


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setattr(hwdog.bootid, "boot_id", lambda: "boot-2")
    loop = Loop(FakeClock(autojump=True))
    logged = []

    def make(driver=None, **settings):
        driver = driver or FakeDriver(tmp_path, timeout=30)
        device = driver.open("/dev/watchdog0")
        dog = hwdog.HardwareWatchdog(loop, lambda level, text: logged.append(text), device,
                                     record=str(tmp_path / "record.json"), **settings)
        return dog, driver

    make.loop, make.logged, make.tmp = loop, logged, tmp_path
    yield make
    loop.close()


def feeds(driver) -> int:
    return driver.writes().count(b"\0")


def test_it_is_fed_every_third_of_its_timeout(setup):
    dog, driver = setup(timeout=9)
    assert driver.timeout == 9 and dog.interval == 3  # SETTIMEOUT took it
    setup.loop.run_until(lambda: False, timeout=30)
    assert feeds(driver) == 11  # at 0, 3, ... 30
    assert dog.status()["feeding"] and dog.status()["timeout"] == 9


def test_a_driver_that_cannot_set_a_timeout_keeps_its_own(setup):
    driver = FakeDriver(setup.tmp, options=watchdog.WDIOF_MAGICCLOSE, timeout=45)
    dog, _ = setup(driver)
    assert dog.timeout == 45 and dog.interval == 15


def test_no_feeding_while_a_kill_is_pending_and_the_culprit_is_on_disk_first(setup):
    dog, driver = setup(timeout=6)
    setup.loop.run_until(lambda: False, timeout=4)
    before = feeds(driver)
    dog.kill_pending("worker3", True, pid=4242)
    record = json.loads((setup.tmp / "record.json").read_text())
    assert record["culprit"] == "worker3" and record["pid"] == 4242 and record["boot_id"] == "boot-2"
    dog.kill_pending("worker4", True)  # a second one: the first stays the culprit
    setup.loop.run_until(lambda: False, timeout=20)
    assert feeds(driver) == before  # the board would have reset by now
    assert dog.status()["pending_kills"] == ["worker3", "worker4"] and not dog.status()["feeding"]
    dog.kill_pending("worker3", False)
    assert feeds(driver) == before  # worker4 still pending
    dog.kill_pending("worker4", False)
    assert feeds(driver) == before + 1  # fed at once
    assert json.loads((setup.tmp / "record.json").read_text())["culprit"] == "worker3"


def test_the_next_boot_reports_the_reset_and_its_culprit(setup):
    (setup.tmp / "record.json").write_text(json.dumps({"culprit": "stuck", "pid": 77, "boot_id": "boot-1"}))
    driver = FakeDriver(setup.tmp, bootstatus=watchdog.WDIOF_CARDRESET)
    dog, _ = setup(driver)
    last = dog.status()["last_reset"]
    assert last["culprit"] == "stuck" and last["bootstatus_says_watchdog"] is True
    assert not (setup.tmp / "record.json").exists()
    again, _ = setup(FakeDriver(setup.tmp))  # ham started again in the same boot: still reported
    assert again.status()["last_reset"]["culprit"] == "stuck"
    assert any("blamed on stuck" in line for line in setup.logged)


def test_a_record_of_this_boot_is_no_reset(setup):
    (setup.tmp / "record.json").write_text(json.dumps({"culprit": "x", "boot_id": "boot-2"}))
    dog, _ = setup()
    assert dog.status()["last_reset"] is None


def test_shutdown_leaves_it_armed_with_the_shutdown_timeout(setup):
    dog, driver = setup(timeout=30, shutdown_timeout=600)
    dog.shutdown()
    assert driver.timeout == 600 and not driver.writes().endswith(b"V") and dog.device.fd == -1
    setup.loop.run_until(lambda: False, timeout=100)
    assert feeds(driver) == 1  # no feeding after it


def test_disarm_is_the_magic_close(setup):
    dog, driver = setup()
    dog.disarm()
    assert driver.writes().endswith(b"V") and dog.device.fd == -1
