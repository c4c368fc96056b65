"""sockmon's watch logic in-process: timing on a FakeClock (no sleeping), give-up actions with
an injected reboot, target parsing, TCP liveness options, abstract unix sockets."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hamtools.core.clock import Clock, FakeClock
from hamtools.core.log import Log
from hamtools.core.loop import Loop
from hamtools.sockmon import targets
from hamtools.sockmon.targets import TargetError, parse_target
from hamtools.sockmon.watch import QUICK_CLOSE, Monitor, Settings

SERVERS = Path(__file__).with_name("sockmon_servers.py")


class RecordingLog(Log):
    def __init__(self, clock):
        super().__init__("sockmon", stderr=False, syslog=False)
        self.clock = clock
        self.lines: list[tuple[float, str]] = []

    def log(self, priority, message):
        self.lines.append((self.clock.monotonic(), message))

    def times(self, text):
        return [t for t, line in self.lines if text in line]


def _monitor(clock, pairs, **settings):
    loop = Loop(clock)
    log = RecordingLog(clock)
    monitor = Monitor(loop, log, Settings(**settings), pairs)
    return loop, log, monitor


def test_retries_are_spaced_by_the_interval_on_fake_time(tmp_path):
    clock = FakeClock(start=0.0, autojump=True)
    target = parse_target(f"unix:{tmp_path}/absent.sock")
    loop, log, monitor = _monitor(clock, [(target, ["true"])], retries=6, retry_interval=5.0)
    monitor.start(signals=False)
    started = time.monotonic()
    assert loop.run_until(lambda: monitor.stopping, timeout=3600)
    assert time.monotonic() - started < 1  # 25 s of retries, no real waiting
    assert log.times("connect failed") == [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]  # the seed: 6 x 5 s
    assert log.times("gave up; exiting") == [25.0]
    assert monitor.exit_code == 1
    loop.close()


def test_the_command_line_defaults_are_the_seeds_6_tries_5_s_apart(tmp_path, monkeypatch, capsys):
    """No --retries, no --retry-interval: the real applet, its loop on a fake clock."""
    from hamtools.applets import sockmon as applet
    from hamtools.core import loop as loop_module

    clock = FakeClock(start=0.0, autojump=True)
    real_loop = loop_module.Loop
    monkeypatch.setattr(loop_module, "Loop", lambda: real_loop(clock))
    started = time.monotonic()
    code = applet.main(["--watch", f"unix:{tmp_path}/nobody.sock", "--restart", "true",
                        "--log", "stderr"])
    assert time.monotonic() - started < 5  # 25 s of retries, on the fake clock
    assert code == 1
    lines = capsys.readouterr().err.splitlines()
    tries = [line for line in lines if ": connect failed: " in line]
    assert [t.partition("(")[2] for t in tries[:5]] == [
        f"try {n} of 6, next in 5 s)" for n in range(1, 6)]
    assert tries[5].endswith("giving up after 6 tries") and len(tries) == 6
    assert clock.monotonic() == 25.0  # five intervals of 5 s between the six tries


def test_give_up_reboot_calls_the_reboot_once():
    calls = []
    clock = FakeClock(start=0.0, autojump=True)
    loop = Loop(clock)
    log = RecordingLog(clock)
    monitor = Monitor(loop, log, Settings(retries=2, retry_interval=1.0, on_give_up="reboot"),
                      [(parse_target("tcp:127.0.0.1:1"), ["true"])],
                      reboot=lambda: calls.append(clock.monotonic()))
    monitor.start(signals=False)
    loop.run_until(lambda: calls, timeout=60)
    assert calls == [1.0]
    assert log.times("gave up; rebooting") == [1.0]
    loop.close()


def test_failed_reboot_exits_1():
    def refuse():
        raise PermissionError(1, "Operation not permitted")

    clock = FakeClock(autojump=True)
    loop = Loop(clock)
    log = RecordingLog(clock)
    monitor = Monitor(loop, log, Settings(retries=1, on_give_up="reboot"),
                      [(parse_target("unix:@hamtools-test-nobody"), ["true"])], reboot=refuse)
    monitor.start(signals=False)
    assert loop.run_until(lambda: monitor.stopping, timeout=60)
    assert monitor.exit_code == 1
    assert any("reboot: operation not permitted" in line for _, line in log.lines)
    loop.close()


def test_quick_closes_are_probed_at_most_every_quick_close_seconds(tmp_path):
    path = tmp_path / "s.sock"
    server = subprocess.Popen([sys.executable, str(SERVERS), "unix", str(path), "--close-at-once"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        clock = FakeClock(start=0.0, autojump=0.05)
        loop, log, monitor = _monitor(clock, [(parse_target(f"unix:{path}"), ["true"])])
        monitor.start(signals=False)
        loop.run_until(lambda: len(log.times("not dead")) >= 4, timeout=30)
        probes = log.times("not dead")
        assert len(probes) >= 4
        gaps = [b - a for a, b in zip(probes, probes[1:])]
        assert all(gap >= QUICK_CLOSE - 1e-9 for gap in gaps), gaps
        assert not log.times("server dead")
        monitor.stop(0)
        loop.close()
    finally:
        server.kill()
        server.wait()


def test_abstract_socket_without_a_known_peer_is_probed_then_dead(tmp_path):
    """Our own listener: the peer is this very process, so only the probe can decide."""
    name = f"hamtools-test-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("\0" + name)
    listener.listen()
    record = tmp_path / "ran"
    script = tmp_path / "restart.sh"
    script.write_text(f'#!/bin/sh\necho "$SOCKMON_REASON $SOCKMON_DETAIL" > {record}\n')
    script.chmod(0o755)
    loop, log, monitor = _monitor(Clock(), [(parse_target(f"unix:@{name}"), [str(script)])],
                                  retries=1, retry_interval=0.01)
    monitor.start(signals=False)
    loop.run_until(lambda: log.times("watching"), timeout=5)
    assert "server pid unknown" in log.lines[-1][1]
    conn, _ = listener.accept()
    conn.close()  # an idle close: the probe connects
    loop.run_until(lambda: log.times("not dead"), timeout=5)
    listener.close()  # now the listener is gone too (our unaccepted connection is reset)
    assert loop.run_until(lambda: monitor.stopping, timeout=10)
    assert record.read_text().endswith("; reconnect failed: connection refused\n")
    loop.close()


def test_tcp_liveness_options_are_set():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    targets.set_tcp_liveness(sock, 30)
    get = sock.getsockopt
    assert get(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
    assert get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 6
    assert get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    assert get(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
    sock.close()


def test_parse_targets():
    unix = parse_target("unix:/run/x.sock")
    assert (unix.kind, unix.address) == ("unix", "/run/x.sock")
    assert parse_target("unix:@abstract").address == "\0abstract"
    tcp = parse_target("tcp:[::1]:8080", tcp_timeout=9)
    assert (tcp.host, tcp.port, tcp.tcp_timeout) == ("::1", 8080, 9)
    assert (parse_target("tcp:router.lan:53").host, parse_target("tcp:router.lan:53").port) == ("router.lan", 53)
    assert parse_target("pid:42").pid == 42 and parse_target("pid:42").once
    pidfile = parse_target("pid:/run/x.pid")
    assert pidfile.pidfile == "/run/x.pid" and not pidfile.once
    assert parse_target("name:io-pkt").prog == "io-pkt"
    for bad in ("unix", "tcp:::1:80", "tcp:[::1]80", "tcp::80", "pid:0", "pid:-3", "name:a/b",
                "unix:" + "x" * 108, "ftp:x"):
        with pytest.raises(TargetError):
            parse_target(bad)


def test_pid_target_connects_only_to_a_living_process(tmp_path):
    loop = Loop()
    results = []
    targets.PidTarget("pid:1", pid=2**22 + 7).connect(loop, lambda link, why: results.append(why))
    pidfile = tmp_path / "x.pid"
    pidfile.write_text("garbage")
    targets.PidTarget("pid:f", pidfile=str(pidfile)).connect(loop, lambda l, why: results.append(why))
    loop.run_until(lambda: len(results) == 2, timeout=5)
    assert results[0] == f"no process {2**22 + 7}"
    assert "does not hold a pid" in results[1]
    loop.close()


def test_cancelled_attempt_never_reports_and_closes_its_socket():
    loop = Loop(FakeClock(autojump=0.01))
    reported = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    target = parse_target(f"tcp:127.0.0.1:{listener.getsockname()[1]}")
    attempt = target.connect(loop, lambda link, why: reported.append(link))
    attempt.cancel()
    loop.run_until(lambda: False, timeout=10)
    assert reported == []
    listener.close()
    loop.close()


def _own_listener(kind: str, name: str) -> tuple[socket.socket, str]:
    """A listener in this very process: sockmon cannot name its peer, so only probes decide."""
    if kind == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + name)
        target = f"unix:@{name}"
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        target = f"tcp:127.0.0.1:{listener.getsockname()[1]}"
    listener.listen()
    return listener, target


def _recording_script(tmp_path):
    record = tmp_path / "ran"
    script = tmp_path / "restart.sh"
    script.write_text(f'#!/bin/sh\necho "$SOCKMON_REASON|$SOCKMON_DETAIL" >> {record}\n')
    script.chmod(0o755)
    return script, record


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_probe_left_in_a_closing_listeners_queue_means_dead_at_once(tmp_path, kind):
    """A dying server's connection goes first, its listener a moment later: the probe
    connects into the doomed queue and is reset. Dead, at once, with the first end's reason."""
    listener, text = _own_listener(kind, f"hamtools-test-q-{os.getpid()}")
    script, record = _recording_script(tmp_path)
    clock = FakeClock(start=0.0, autojump=0.05)
    loop, log, monitor = _monitor(clock, [(parse_target(text), [str(script)])],
                                  retries=1, retry_interval=1.0)
    watch = monitor.watches[0]
    monitor.start(signals=False)
    assert loop.run_until(lambda: watch.state == "watching", timeout=5)
    conn, _ = listener.accept()
    clock.advance(10.0)  # the server has been up a while
    conn.close()  # the server's connection goes first...
    # (until the probe has connected; an old sockmon said "not dead" right then)
    assert loop.run_until(lambda: watch.state == "confirming" or log.times("not dead"), timeout=5)
    ended = clock.monotonic()
    listener.close()  # ...then its listener, with our unaccepted probe in the queue
    assert loop.run_until(lambda: log.times("server dead"), timeout=5)
    assert log.times("server dead") == [ended]  # no QUICK_CLOSE wait, no fake time at all
    assert not log.times("not dead")
    assert loop.run_until(lambda: monitor.stopping, timeout=10)
    assert record.read_text().splitlines() == [
        "eof|the server closed the connection; reconnect failed: connection refused"]
    loop.close()


def test_a_server_that_resets_the_probe_but_still_listens_is_not_dead():
    """Accept, then reset (SO_LINGER 0): the re-check connects at once, so it lives."""
    listener, text = _own_listener("tcp", "")
    clock = FakeClock(start=0.0, autojump=0.05)
    loop, log, monitor = _monitor(clock, [(parse_target(text), ["false"])])
    watch = monitor.watches[0]
    monitor.start(signals=False)
    linger_0 = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")  # struct linger {1, 0}

    def accept_and_reset():
        conn, _ = listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_0)
        conn.close()

    assert loop.run_until(lambda: watch.state == "watching", timeout=5)
    clock.advance(10.0)
    accept_and_reset()  # the watched connection: reset
    assert loop.run_until(lambda: watch.state == "confirming", timeout=5)
    ended = clock.monotonic()
    accept_and_reset()  # the probe: reset too
    assert loop.run_until(lambda: log.times("not dead"), timeout=5)
    assert log.times("not dead") == [ended]  # the re-check came at once and connected
    assert watch.state == "watching" and watch.link is not None
    assert not log.times("server dead")
    monitor.stop(0)
    listener.close()
    loop.close()
