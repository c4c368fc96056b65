"""sockmon end to end: real servers, real kills, real scripts (SPEC §7, issue 8).

Every server here is a separate process started by the test (tests/sockmon_servers.py, or
`sleep` for pid:/name:), killed with SIGKILL (a crash) or SIGTERM (a clean exit). sockmon
runs from the source tree (`python -m hamtools`), once from the built zipapp.
Real waits stay short: retry intervals of 0.05 s.
"""

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hamtools.sockmon.targets import CONNECT_TIMEOUT
from hamtools.sockmon.watch import QUICK_CLOSE

ROOT = Path(__file__).resolve().parent.parent
SERVERS = Path(__file__).with_name("sockmon_servers.py")
FAST = ["--retries", "3", "--retry-interval", "0.05"]


class Sockmon:
    """A sockmon process whose stderr log lines the test can wait for."""

    def __init__(self, args, cwd, *, env=None, command=None):
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT),
                "HAMTOOLS_SYSLOG_SOCKET": str(Path(cwd) / "no-syslog")}
        base.update(env or {})
        command = command or [sys.executable, "-m", "hamtools", "sockmon"]
        self.proc = subprocess.Popen([*command, *map(str, args)], cwd=cwd, env=base,
                                     stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                hits = [line for line in self.lines if text in line]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {count}x {text!r} in sockmon's log:\n" + self.log())
                self._changed.wait(min(left, 0.1))

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait(self, timeout: float = 10.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait()


@pytest.fixture
def sockmon(tmp_path):
    started: list[Sockmon] = []

    def start(*args, **kw):
        monitor = Sockmon(args, tmp_path, **kw)
        started.append(monitor)
        return monitor

    yield start
    for monitor in started:
        if monitor.proc.poll() is None:
            monitor.proc.kill()
            monitor.wait()


@pytest.fixture
def servers(tmp_path):
    started: list[subprocess.Popen] = []

    def start(*args, prefix=()):
        server = subprocess.Popen([*prefix, sys.executable, str(SERVERS), *map(str, args)],
                                  stdout=subprocess.PIPE, text=True, cwd=tmp_path)
        assert server.stdout.readline() == "ready\n"
        started.append(server)
        return server

    yield start
    for server in started:
        if server.poll() is None:
            server.kill()
        server.wait()


def make_script(tmp_path: Path, name: str = "restart.sh", extra: str = "") -> tuple[Path, Path]:
    """An executable restart script that records one line per run: TARGET|REASON|PID|ARGS."""
    record = tmp_path / f"{name}.runs"
    script = tmp_path / name
    script.write_text('#!/bin/sh\necho "$SOCKMON_TARGET|$SOCKMON_REASON|$SOCKMON_PID|$*" >> '
                      f'"{record}"\n{extra}')
    script.chmod(0o755)
    return script, record


def runs(record: Path) -> list[list[str]]:
    return [line.split("|") for line in record.read_text().splitlines()] if record.exists() else []


def watch_unix_server(tmp_path, servers, sockmon, *server_args):
    """A unix server with these options, and sockmon (FAST retries) watching it."""
    path = tmp_path / "s.sock"
    server = servers("unix", path, *server_args)
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", f"unix:{path}", "--restart", script, *FAST)
    mon.wait_for(f"watching (server pid {server.pid})")
    return server, record, mon


def wait_file_lines(path: Path, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def wait_accepted(where: Path, count: int = 1) -> None:
    """Until the test server at `where` has accepted `count` connections. sockmon's
    "watching" comes when connect() returns, which can be before the accept; a server
    killed in between resets the queued connection (reason reset, not eof)."""
    assert len(wait_file_lines(Path(f"{where}.count"), count)) >= count, "nothing accepted"


# -- each kind of server, each kind of death ---------------------------------------------

@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "clean-exit"])
@pytest.mark.parametrize("flavour", ["stream", "seqpacket"])
def test_unix_server_death_runs_script_once_then_gives_up(tmp_path, servers, sockmon, how, flavour):
    path = tmp_path / "s.sock"
    server = servers("unix", path, *(["--seqpacket"] if flavour == "seqpacket" else []))
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", f"unix:{path}", "--restart", script, *FAST)
    mon.wait_for(f"watching (server pid {server.pid})")
    wait_accepted(path)
    server.send_signal(how)
    # after the script: 3 tries 0.05 s apart, then the default give-up action, exit 1
    assert mon.wait() == 1
    [[got_target, reason, pid, args]] = runs(record)
    assert (got_target, pid, args) == (f"unix:{path}", str(server.pid), "")
    assert reason == "eof"  # the connection's own end, never a probe's
    assert "not dead" not in mon.log()
    assert mon.count(": connect failed") == 3
    assert "gave up; exiting" in mon.log()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "clean-exit"])
def test_tcp_server_death_runs_script_once(tmp_path, servers, sockmon, how):
    portfile = tmp_path / "port"
    server = servers("tcp", portfile)
    target = f"tcp:127.0.0.1:{portfile.read_text()}"
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", target, "--restart", script, *FAST)
    mon.wait_for("watching (server pid unknown)")  # a TCP peer has no local pid to hold
    wait_accepted(portfile)
    server.send_signal(how)
    assert mon.wait() == 1
    [[got_target, reason, pid, _]] = runs(record)
    assert (got_target, pid) == (target, "")
    assert reason == "eof"
    assert "not dead" not in mon.log()
    assert "reconnect failed: connection refused" in mon.log()


def target_of(kind: str, where: Path) -> str:
    """The watch target of a test server: its socket path, or the port it wrote to where."""
    return f"unix:{where}" if kind == "unix" else f"tcp:127.0.0.1:{where.read_text()}"


def timed_script(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    """A restart script recording REASON|WALL-TIME-IT-STARTED per run (date +%s.%N)."""
    record = tmp_path / "timed.runs"
    script = tmp_path / "timed.sh"
    script.write_text(f'#!/bin/sh\necho "$SOCKMON_REASON|$(date +%s.%N)" >> "{record}"\n{extra}')
    script.chmod(0o755)
    return script, record


def serve_again(servers, kind: str, where: Path, *options):
    """A server on the same unix path or TCP port as before (the first call picks the port)."""
    if kind == "tcp" and where.exists():
        options = ("--port", where.read_text(), *options)
    return servers(kind, where, *options)


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_repeated_kills_are_seen_at_once_with_the_first_ends_reason(tmp_path, servers, sockmon, kind):
    """SIGKILL tears the server's connection down a moment before its listener, so a probe
    can still connect; it must not pass for a living server (that cost 0.5 s and gave the
    probe's reason)."""
    where = tmp_path / ("s.sock" if kind == "unix" else "port")
    server = serve_again(servers, kind, where)
    target = target_of(kind, where)
    script, record = timed_script(tmp_path)
    mon = sockmon("--watch", target, "--restart", script, "--retries", "200",
                  "--retry-interval", "0.02")
    kills = []
    for round_ in range(5):
        mon.wait_for(": watching (", count=round_ + 1)
        wait_accepted(where, round_ + 1)
        time.sleep(QUICK_CLOSE + 0.1)  # the server's life: longer than a probe's spacing
        kills.append(time.time())
        server.kill()
        assert len(wait_file_lines(record, round_ + 1)) == round_ + 1, mon.log()
        server.wait()
        server = serve_again(servers, kind, where)
    scripts = [line.split("|") for line in record.read_text().splitlines()]
    assert [reason for reason, _ in scripts] == ["eof"] * 5, mon.log()
    latencies = [float(started) - killed for (_, started), killed in zip(scripts, kills)]
    assert max(latencies) < QUICK_CLOSE / 2, latencies  # detection did not wait for a probe slot
    assert "not dead" not in mon.log()
    assert mon.count("server dead") == 5
    assert mon.stop() == 0


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_a_server_dying_connection_first_then_listener_is_dead_not_idle(tmp_path, servers, sockmon,
                                                                         kind):
    """The same order of teardown, stretched to 0.2 s so the probe surely lands in the queue."""
    where = tmp_path / ("s.sock" if kind == "unix" else "port")
    server = servers(kind, where, "--slow-death", "0.2")
    target = target_of(kind, where)
    script, record = timed_script(tmp_path)
    mon = sockmon("--watch", target, "--restart", script, *FAST)
    mon.wait_for(": watching (")
    wait_accepted(where)
    started = time.time()
    server.send_signal(signal.SIGUSR1)
    assert mon.wait() == 1
    [[reason, ran]] = [line.split("|") for line in record.read_text().splitlines()]
    assert reason == "eof"
    # Not before the listener closed, 0.2 s after the connection (so the probe had connected
    # into its queue: a refused one would have decided at once), and at once after that.
    assert 0.2 <= float(ran) - started < 0.2 + QUICK_CLOSE / 2
    assert "not dead" not in mon.log()
    assert len((tmp_path / f"{where.name}.count").read_text().splitlines()) == 1  # never accepted


SYS_PIDFD_GETFD = 438  # the same number on every architecture (asm-generic era)


def sockets_of(pid: int, port: int) -> list[socket.socket]:
    """Copies (pidfd_getfd) of process pid's sockets connected to port, to look at."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    found = []
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except FileNotFoundError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                code = ctypes.get_errno()
                if code in (errno.ENOSYS, errno.EPERM):
                    pytest.skip(f"pidfd_getfd: {os.strerror(code)}")
                raise OSError(code, os.strerror(code))
            sock = socket.socket(fileno=fd)
            try:
                peer = sock.getpeername()
            except OSError:
                peer = None
            if sock.family == socket.AF_INET and peer and peer[1] == port:
                found.append(sock)
            else:
                sock.close()
    finally:
        os.close(pidfd)
    return found


@pytest.mark.parametrize("option, idle, interval, user_timeout", [
    ((), 10, 6, 30000),  # the default, 30 s: probes after 10 s idle, every 6 s, 3 of them
    (("--tcp-timeout", "12"), 4, 2, 12000),
], ids=["default", "tcp-timeout-12"])
def test_the_watched_tcp_socket_has_keepalive_and_user_timeout(tmp_path, servers, sockmon,
                                                                option, idle, interval,
                                                                user_timeout):
    portfile = tmp_path / "port"
    servers("tcp", portfile)
    port = int(portfile.read_text())
    script, _ = make_script(tmp_path)
    mon = sockmon("--watch", f"tcp:127.0.0.1:{port}", "--restart", script, *option, *FAST)
    mon.wait_for("watching (server pid unknown)")
    [watched] = sockets_of(mon.proc.pid, port)
    get = watched.getsockopt
    try:
        assert get(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == idle
        assert get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == interval
        assert get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
        assert get(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == user_timeout
    finally:
        watched.close()
    assert mon.stop() == 0


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: ("A", "B") names, 10.77.0.1 and .2."""
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("tc")):
        pytest.skip("needs root and iproute2's ip and tc (network namespaces, a qdisc)")
    tag = f"hmsm{os.getpid()}"
    a, b = f"{tag}a", f"{tag}b"

    def ip(*args):
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"ip {' '.join(args)}: {done.stderr.strip()}")

    ip("netns", "add", a)
    try:
        ip("netns", "add", b)
        ip("link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
        for ns, dev, addr in ((a, "va", "10.77.0.1/30"), (b, "vb", "10.77.0.2/30")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_a_peer_that_vanishes_silently_is_noticed(tmp_path, two_hosts, servers, sockmon):
    """The server's host stops answering (everything it sends is dropped: a pulled cable, a
    hung kernel). No FIN, no RST: only keepalive and TCP_USER_TIMEOUT can tell."""
    a, b = two_hosts
    portfile = tmp_path / "port"
    servers("tcp", portfile, "--host", "10.77.0.2", prefix=("ip", "netns", "exec", b))
    target = f"tcp:10.77.0.2:{portfile.read_text()}"
    script, record = timed_script(tmp_path)
    mon = sockmon("--watch", target, "--restart", script, "--tcp-timeout", "3", "--retries", "1",
                  command=["ip", "netns", "exec", a, sys.executable, "-m", "hamtools", "sockmon"])
    mon.wait_for("watching (server pid unknown)")
    # A token bucket too small for any packet drops all of B's output. (A drop on A's own
    # side would not do: TCP takes a local drop for congestion and keeps retrying.)
    muted = time.time()
    done = subprocess.run(["ip", "netns", "exec", b, "tc", "qdisc", "add", "dev", "vb", "root",
                           "tbf", "rate", "8bit", "burst", "1", "limit", "1"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"tc tbf: {done.stderr.strip()}")
    line = mon.wait_for("server dead", timeout=3 + CONNECT_TIMEOUT + 10)
    assert "(connection timed out; reconnect failed: connection timed out)" in line
    [[reason, ran]] = [run.split("|") for run in wait_file_lines(record, 1)]
    assert reason == "timeout"
    # keepalive from 1 s idle, TCP_USER_TIMEOUT 3 s, then the probe's connect timeout
    assert 2 <= float(ran) - muted < 3 + CONNECT_TIMEOUT + 2
    assert mon.wait(10) == 1


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "clean-exit"])
def test_plain_process_pid_target(tmp_path, sockmon, how):
    plain = subprocess.Popen(["sleep", "60"])
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", f"pid:{plain.pid}", "--restart", script, *FAST)
    mon.wait_for(f"watching (pid {plain.pid})")
    plain.send_signal(how)
    plain.wait()
    # a pid cannot come back: the watch ends after its script; no watch left: exit 0
    assert mon.wait() == 0
    assert runs(record) == [[f"pid:{plain.pid}", "exited", str(plain.pid), ""]]
    assert "this watch ends" in mon.log()


def test_name_target_follows_the_program_and_pidfile_target(tmp_path, sockmon):
    prog = tmp_path / f"smtest{os.getpid()}"
    shutil.copy("/bin/sleep", prog)
    first = subprocess.Popen([str(prog), "60"])
    second = subprocess.Popen([str(prog), "60"])  # younger: name: follows the oldest
    pidfile = tmp_path / "server.pid"
    pidfile.write_text(f"{second.pid}\n")
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", f"name:{prog.name}", "--restart", script,
                  "--watch", f"pid:{pidfile}", "--restart", script, *FAST)
    mon.wait_for(f"name:{prog.name}: watching (pid {first.pid})")
    mon.wait_for(f"pid:{pidfile}: watching (pid {second.pid})")
    first.kill()
    first.wait()
    # the script ran; reconnecting finds the other process of that name
    mon.wait_for(f"name:{prog.name}: watching (pid {second.pid})")
    second.kill()
    second.wait()
    assert mon.wait() == 1  # nothing of that name left (and the pidfile is stale): give up
    got = sorted((r[0], r[2]) for r in runs(record))
    assert got == sorted([(f"name:{prog.name}", str(first.pid)), (f"name:{prog.name}", str(second.pid)),
                          (f"pid:{pidfile}", str(second.pid))])


# -- the seed's flow: reconnect, retries, give-up -----------------------------------------

def test_script_restarts_the_server_and_sockmon_reconnects(tmp_path, servers, sockmon):
    path = tmp_path / "s.sock"
    server = servers("unix", path)
    pidfile = tmp_path / "server.pid"
    script, record = make_script(tmp_path, extra=(
        f'{sys.executable} {SERVERS} unix {path} > /dev/null &\n'
        f'echo $! > {pidfile}\n'))
    mon = sockmon("--watch", f"unix:{path}", "--restart", script,
                  "--retries", "100", "--retry-interval", "0.05")
    mon.wait_for(f"watching (server pid {server.pid})")
    for round_ in (1, 2):
        victim = server.pid if round_ == 1 else int(pidfile.read_text())
        os.kill(victim, signal.SIGKILL)
        mon.wait_for("restart script", count=round_)
        new = wait_for_pidfile_server(pidfile, previous=victim)
        mon.wait_for(f"watching (server pid {new})")
    assert [r[2] for r in runs(record)] == [str(server.pid), str(victim)]
    assert mon.stop() == 0
    os.kill(int(pidfile.read_text()), signal.SIGKILL)


def wait_for_pidfile_server(pidfile: Path, previous: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid = int(pidfile.read_text())
        except (FileNotFoundError, ValueError):
            pid = previous
        if pid != previous:
            return pid
        time.sleep(0.02)
    raise AssertionError("the restart script did not start a new server")


def test_give_up_command_runs_then_a_fresh_round(tmp_path, sockmon):
    script, record = make_script(tmp_path)
    gave_up = tmp_path / "gave-up"
    mon = sockmon("--watch", f"unix:{tmp_path}/nobody.sock", "--restart", script, *FAST,
                  "--on-give-up", f'echo "$SOCKMON_REASON $SOCKMON_TARGET" >> {gave_up}')
    lines = wait_file_lines(gave_up, 2)
    assert lines[:2] == [f"give-up unix:{tmp_path}/nobody.sock"] * 2
    assert mon.stop() == 0
    assert runs(record) == []  # never connected, so never dead: the script is not run
    assert mon.count(": connect failed") >= 6


def test_retry_interval_spaces_the_tries(tmp_path, sockmon):
    script, _ = make_script(tmp_path)
    started = time.monotonic()
    mon = sockmon("--watch", f"unix:{tmp_path}/nobody.sock", "--restart", script,
                  "--retries", "4", "--retry-interval", "0.3")
    assert mon.wait() == 1
    assert time.monotonic() - started >= 0.9  # 4 tries, 3 intervals
    assert mon.count(": connect failed") == 4
    assert "try 1 of 4, next in 0.3 s" in mon.log()


# -- idle close is not death --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_idle_close_is_not_taken_for_death(tmp_path, servers, sockmon, kind):
    where = tmp_path / ("s.sock" if kind == "unix" else "port")
    server = servers(kind, where, "--idle-close", "0.2")
    target = target_of(kind, where)
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", target, "--restart", script, *FAST)
    mon.wait_for("watching")
    mon.wait_for("not dead; watching again", count=3)
    assert runs(record) == []
    server.kill()  # and now a real death, still seen
    assert mon.wait() == 1
    assert len(runs(record)) == 1


def test_a_child_holding_the_connection_does_not_hide_the_death(tmp_path, servers, sockmon):
    """No EOF comes (a forked worker still holds the connection): the server's pidfd tells."""
    server, record, mon = watch_unix_server(tmp_path, servers, sockmon, "--fork-holder")
    deadline = time.monotonic() + 5
    while not (holders := open(f"/proc/{server.pid}/task/{server.pid}/children").read().split()):
        assert time.monotonic() < deadline, "the server did not fork its holder"
        time.sleep(0.01)
    server.kill()
    assert mon.wait() == 1
    for holder in holders:
        os.kill(int(holder), signal.SIGKILL)
    [[_, reason, pid, _]] = runs(record)
    assert (reason, pid) == ("exited", str(server.pid))
    assert f"server pid {server.pid} exited; reconnect failed" in mon.log()


def test_a_server_that_daemonizes_after_listen_is_not_dead(tmp_path, servers, sockmon):
    """The listening process exits but its child serves on: the probe says alive."""
    server, record, mon = watch_unix_server(tmp_path, servers, sockmon, "--detach-after-first")
    assert server.wait(5) == 0
    line = mon.wait_for("not dead; watching again")
    assert f"server pid {server.pid} exited, but the server accepts" in line
    time.sleep(0.5)
    assert runs(record) == [] and "server dead" not in mon.log()
    assert mon.stop() == 0
    for pid in subprocess.run(["pgrep", "-f", f"sockmon_servers.py unix {tmp_path}/s.sock"],
                              capture_output=True, text=True).stdout.split():
        os.kill(int(pid), signal.SIGKILL)


def test_server_closing_at_once_is_probed_at_most_every_half_second(tmp_path, servers, sockmon):
    path = tmp_path / "s.sock"
    servers("unix", path, "--close-at-once")
    script, record = make_script(tmp_path)
    mon = sockmon("--watch", f"unix:{path}", "--restart", script, *FAST)
    accepts = [float(t) for t in wait_file_lines(tmp_path / "s.sock.count", 5)]
    assert len(accepts) >= 5
    # the first connection, its probe at once (nothing was probed before), then one probe
    # per QUICK_CLOSE at most (a little slack: each accept comes a moment after its probe)
    assert accepts[1] - accepts[0] < QUICK_CLOSE / 2
    gaps = [b - a for a, b in zip(accepts[1:], accepts[2:])]
    assert all(gap > QUICK_CLOSE - 0.02 for gap in gaps), gaps
    assert runs(record) == [] and "server dead" not in mon.log()
    assert mon.stop() == 0


# -- several watches ----------------------------------------------------------------------

def test_pairs_keep_their_order_and_watches_are_independent(tmp_path, servers, sockmon):
    a, b = tmp_path / "a.sock", tmp_path / "b.sock"
    server_a = servers("unix", a)
    server_b = servers("unix", b)
    script_a, record_a = make_script(tmp_path, "a.sh")
    script_b, record_b = make_script(tmp_path, "b.sh")
    mon = sockmon(f"--watch=unix:{a}", f"--restart={script_a}", "--retries", "50",
                  "--watch", f"unix:{b}", "--retry-interval", "0.05", "--restart", script_b)
    mon.wait_for(f"watching (server pid {server_a.pid})")
    mon.wait_for(f"watching (server pid {server_b.pid})")
    server_b.kill()
    mon.wait_for(f"unix:{b}: restart script {script_b} exited 0")
    assert runs(record_a) == [] and len(runs(record_b)) == 1
    assert mon.count(f"unix:{a}: ") == 1  # a's watch never noticed anything
    assert mon.stop() == 0


def test_one_watch_giving_up_with_the_default_exit_stops_every_watch(tmp_path, servers, sockmon):
    path = tmp_path / "a.sock"
    server = servers("unix", path)
    script, record = make_script(tmp_path, extra="exec sleep 60\n")
    mon = sockmon("--watch", f"unix:{path}", "--restart", script,
                  "--watch", f"unix:{tmp_path}/nobody.sock", "--restart", script,
                  "--retries", "20", "--retry-interval", "0.05")
    mon.wait_for(f"watching (server pid {server.pid})")
    server.kill()  # a's script runs (and would sleep a minute) while b keeps failing
    wait_file_lines(record, 1)
    assert mon.wait() == 1  # b gave up: exit, for a too
    assert f"unix:{tmp_path}/nobody.sock: gave up; exiting" in mon.log()
    assert f"unix:{path}: restart script {script} killed by SIGTERM" in mon.log()
    assert len(runs(record)) == 1


def test_a_give_up_command_is_for_that_watch_alone(tmp_path, servers, sockmon):
    path = tmp_path / "a.sock"
    server = servers("unix", path)
    script, record = make_script(tmp_path)
    gave_up = tmp_path / "gave-up"
    mon = sockmon("--watch", f"unix:{path}", "--restart", script,
                  "--watch", f"unix:{tmp_path}/nobody.sock", "--restart", script, *FAST,
                  "--on-give-up", f'echo "$SOCKMON_TARGET" >> {gave_up}')
    mon.wait_for(f"watching (server pid {server.pid})")
    assert wait_file_lines(gave_up, 2)[:2] == [f"unix:{tmp_path}/nobody.sock"] * 2
    server.kill()  # a's watch still watches: its death is seen and its script runs
    mon.wait_for(f"unix:{path}: restart script {script} exited 0")
    assert [r[0] for r in runs(record)] == [f"unix:{path}"]
    assert mon.proc.poll() is None
    assert mon.stop() == 0


def test_config_file_lines_with_arguments_and_comments(tmp_path, servers, sockmon):
    a, b = tmp_path / "a.sock", tmp_path / "b.sock"
    servers("unix", a)
    server_b = servers("unix", b, "--seqpacket")
    script, record = make_script(tmp_path)
    config = tmp_path / "sockmon.conf"
    config.write_text(f"# watched servers\n\nunix:{a} {script} first 'two words'\n"
                      f"   unix:{b}   {script} second  # trailing comment\n")
    mon = sockmon("--config", config, *FAST)
    mon.wait_for(f"unix:{a}: watching")
    mon.wait_for(f"unix:{b}: watching")
    wait_accepted(b)
    server_b.kill()
    mon.wait_for(f"unix:{b}: restart script")
    [[target, reason, pid, args]] = runs(record)
    assert (target, pid, args) == (f"unix:{b}", str(server_b.pid), "second")
    assert reason == "eof"
    assert mon.stop() == 0


# -- the daemon's manners -----------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_stop_signal_stops_cleanly_and_ends_a_running_script(tmp_path, servers, sockmon, signum):
    path = tmp_path / "s.sock"
    server = servers("unix", path)
    script, record = make_script(tmp_path, extra="exec sleep 60\n")
    pidfile = tmp_path / "sockmon.pid"
    mon = sockmon("--watch", f"unix:{path}", "--restart", script, "--pidfile", pidfile, *FAST)
    mon.wait_for("watching")
    assert pidfile.read_text() == f"{mon.proc.pid}\n"
    server.kill()
    wait_file_lines(record, 1)
    started = time.monotonic()
    mon.proc.send_signal(signum)
    assert mon.wait() == 0
    assert time.monotonic() - started < 3
    assert f"stopping on {signal.Signals(signum).name}" in mon.log()
    assert "killed by SIGTERM" in mon.log()  # the script is asked to stop the same way
    assert "Traceback" not in mon.log()
    assert not pidfile.exists()


def test_no_reconnect_while_the_script_runs(tmp_path, servers, sockmon):
    """The seed waits for its script (P_WAIT): here the script has a new server up and
    listening 0.3 s before it ends, and sockmon still connects only after it ended."""
    path = tmp_path / "s.sock"
    server = servers("unix", path)
    times, out, pidfile = tmp_path / "script.times", tmp_path / "new.out", tmp_path / "new.pid"
    script, _ = make_script(tmp_path, extra=(
        f'{sys.executable} {SERVERS} unix {path} > {out} &\n'
        f'echo $! >> {pidfile}\n'
        f'until grep -q ready {out}; do sleep 0.01; done\n'
        f'echo "up $(date +%s.%N)" >> {times}\n'
        'sleep 0.3\n'
        f'echo "end $(date +%s.%N)" >> {times}\n'))
    mon = sockmon("--watch", f"unix:{path}", "--restart", script, *FAST)
    mon.wait_for(f"watching (server pid {server.pid})")
    killed = time.time()
    server.kill()
    try:
        new = int(wait_file_lines(pidfile, 1)[0])
        mon.wait_for(f"watching (server pid {new})")
        stamps = dict(line.split() for line in wait_file_lines(times, 2))
        deadline = time.monotonic() + 10
        while not (accepts := [float(t) for t in (tmp_path / "s.sock.count").read_text().split()
                               if float(t) > killed]):
            assert time.monotonic() < deadline, "the new server accepted nothing"
            time.sleep(0.02)
        # (the first server may not have accepted before its kill, so count from the kill)
        assert len(accepts) == 1 and accepts[0] > float(stamps["end"]) > float(stamps["up"])
        lines = mon.log().splitlines()
        ended = next(i for i, line in enumerate(lines) if "restart script" in line)
        assert not [line for line in lines[:ended] if ": connect failed" in line]
        assert mon.stop() == 0
    finally:
        # sockmon first: it would answer a killed server by running the script again
        if mon.proc.poll() is None:
            mon.proc.kill()
        for pid in (pidfile.read_text().split() if pidfile.exists() else []):
            os.kill(int(pid), signal.SIGKILL)


def test_zero_cpu_and_no_wakeups_while_waiting(tmp_path, servers, sockmon):
    _, _, mon = watch_unix_server(tmp_path, servers, sockmon)
    time.sleep(0.2)
    before = _cpu_and_switches(mon.proc.pid)
    time.sleep(1.0)
    assert _cpu_and_switches(mon.proc.pid) == before  # not one wakeup in a second
    assert mon.stop() == 0


def _cpu_and_switches(pid: int) -> tuple:
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rindex(")") + 2:].split()
    status = dict(line.split(":\t") for line in open(f"/proc/{pid}/status").read().splitlines()
                  if ":\t" in line)
    return (fields[11], fields[12], status["voluntary_ctxt_switches"].strip(),
            status["nonvoluntary_ctxt_switches"].strip())


def test_daemon_detaches_and_logs_to_syslog(tmp_path, servers):
    path = tmp_path / "s.sock"
    server = servers("unix", path)
    script, record = make_script(tmp_path)
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(tmp_path / "syslog"))
    syslog.settimeout(10)
    pidfile = tmp_path / "sockmon.pid"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT),
           "HAMTOOLS_SYSLOG_SOCKET": str(tmp_path / "syslog")}
    done = subprocess.run([sys.executable, "-m", "hamtools", "sockmon", "--daemon",
                           "--pidfile", pidfile.name, "--watch", f"unix:{path.name}",
                           "--restart", f"./{script.name}",
                           *FAST], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    daemon = int(wait_file_lines(pidfile, 1)[0])
    first = syslog.recv(4096).decode()
    # relative paths (pidfile, socket, script) still work although the daemon is in /
    assert first.startswith("<30>") and f"sockmon[{daemon}]: unix:{path.name}: watching" in first
    assert os.getsid(daemon) not in (os.getsid(0), daemon)  # a new session it does not lead
    server.kill()
    assert len(wait_file_lines(record, 1)) == 1
    warning = syslog.recv(4096).decode()
    assert warning.startswith("<28>") and "server dead" in warning
    os.kill(daemon, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pidfile.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    syslog.close()


# -- refusing to start --------------------------------------------------------------------

def _run(tmp_path, *args, env=None):
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "hamtools", "sockmon", *map(str, args)],
                          env=base, cwd=tmp_path, capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("args, code, message", [
    ([], 2, "sockmon: nothing to watch"),
    (["--watch", "unix:/x"], 2, "sockmon: --watch unix:/x has no --restart SCRIPT after it"),
    (["--restart", "S", "--watch", "unix:/x"], 2, "sockmon: --restart S has no --watch TARGET"),
    (["--watch", "unix:/a", "--watch", "unix:/b", "--restart", "S", "--restart", "S"], 2,
     "sockmon: --watch unix:/a has no --restart SCRIPT after it"),
    (["--watch", "udp:x:1", "--restart", "S"], 2, "sockmon: --watch: 'udp:x:1': unknown kind 'udp'"),
    (["--watch", "tcp:host", "--restart", "S"], 2, "expected tcp:HOST:PORT"),
    (["--watch", "tcp:host:99999", "--restart", "S"], 2, "PORT must be 1-65535"),
    (["--watch", "pid:abc", "--restart", "S"], 2, "PID must be a positive number"),
    (["--watch", "name:", "--restart", "S"], 2, "PROG must be a program name"),
    (["--watch", "unix:", "--restart", "S"], 2, "the socket path is empty"),
    (["--watch", "/x", "--restart", "S"], 2, "expected unix:PATH, tcp:HOST:PORT"),
    (["--watch", "unix:/x", "--restart", "/nonexistent/s.sh"], 3,
     "sockmon: --restart /nonexistent/s.sh: no such file or directory"),
    (["--watch", "unix:/x", "--restart", "no-such-script-anywhere"], 3, "not found in PATH"),
    (["--watch", "unix:/x", "--restart", "plain.txt"], 1, "plain.txt: not executable"),
    (["--watch", "unix:/x", "--restart", "/tmp"], 1, "/tmp: not a regular file"),
    (["--watch", "unix:/x", "--restart", "true", "--retries", "0"], 2, "Invalid value for '--retries'"),
    (["--watch", "unix:/x", "--restart", "true", "--log", "kernel"], 2, "--log kernel: expected"),
    (["--watch", "unix:/x", "--restart", "true", "--on-give-up", " "], 2, "--on-give-up: empty"),
    (["--bogus"], 2, "No such option: --bogus"),
])
def test_bad_arguments_start_nothing(tmp_path, args, code, message):
    (tmp_path / "plain.txt").write_text("not a program\n")
    (tmp_path / "plain.txt").chmod(0o644)
    args = [f"./{a}" if a == "plain.txt" else a for a in args]
    done = _run(tmp_path, *args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") <= 4  # one line (typer's usage errors: its short box)


@pytest.mark.parametrize("text, code, message", [
    ("unix:/x\n", 2, "sockmon.conf:1: unix:/x has no restart script"),
    ("# ok\nbogus:1 true\n", 2, "sockmon.conf:2: 'bogus:1': unknown kind"),
    ("unix:/x 'unclosed\n", 2, "sockmon.conf:1: no closing quotation"),
    ("unix:/x true\n\nunix:/y /nonexistent/x\n", 3,
     "sockmon.conf:3: restart script /nonexistent/x: no such file or directory"),
    ("tcp:[::1]:0 true\n", 2, "sockmon.conf:1: 'tcp:[::1]:0': PORT must be 1-65535"),
])
def test_bad_config_lines_name_file_and_line(tmp_path, text, code, message):
    config = tmp_path / "sockmon.conf"
    config.write_text(text)
    done = _run(tmp_path, "--config", config)
    assert (done.returncode, done.stderr.count("\n")) == (code, 1), done.stderr
    assert done.stderr.startswith("sockmon: ") and message in done.stderr


def test_missing_config_file(tmp_path):
    done = _run(tmp_path, "--config", tmp_path / "nope.conf")
    assert done.returncode == 3
    assert done.stderr == f"sockmon: --config {tmp_path}/nope.conf: no such file\n"


def test_name_target_without_psutil_says_so_and_other_targets_still_work(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "psutil.py").write_text("raise ImportError('psutil blocked for this test')\n")
    env = {"PYTHONPATH": f"{blocker}:{ROOT}"}
    done = _run(tmp_path, "--watch", "name:foo", "--restart", "true", env=env)
    assert done.returncode == 1
    assert done.stderr == "sockmon: name: targets need psutil (psutil blocked for this test)\n"
    plain = subprocess.Popen(["sleep", "0.3"])
    done = _run(tmp_path, "--watch", f"pid:{plain.pid}", "--restart", "true", "--log", "stderr",
                env=env)
    plain.wait()
    assert done.returncode == 0 and "server dead" in done.stderr, done.stderr


# -- from the built zipapp ----------------------------------------------------------------

def test_zipapp_runs_sockmon_through_shiv_with_fresh_shiv_root(tmp_path, hamtools_zip, clean_python):
    """From a clean interpreter (no site packages): psutil comes from the zip, extracted."""
    shiv_root = tmp_path / "shiv"
    prog = tmp_path / f"smzip{os.getpid()}"
    shutil.copy("/bin/sleep", prog)
    server = subprocess.Popen([str(prog), "60"])
    script, record = make_script(tmp_path)
    mon = Sockmon(["--watch", f"name:{prog.name}", "--restart", script, *FAST], tmp_path,
                  command=[clean_python, "-I", str(hamtools_zip), "sockmon", "--log", "stderr"],
                  env={"SHIV_ROOT": str(shiv_root), "PYTHONPATH": ""})
    try:
        mon.wait_for(f"watching (pid {server.pid})", timeout=30)
        server.kill()
        server.wait()
        assert mon.wait(30) == 1
    finally:
        if mon.proc.poll() is None:
            mon.proc.kill()
    assert runs(record) == [[f"name:{prog.name}", "exited", str(server.pid), ""]]
    assert list(shiv_root.glob("*/site-packages/psutil")), "shiv did not extract psutil"
