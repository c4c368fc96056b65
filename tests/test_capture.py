"""hamtools.hamd.capture: a service's stdout/stderr read on ham's loop into size-rotated
files or syslog, with real children writing and nothing lost across a rotation."""

import os
import socket

import pytest

from hamtools.core.log import LOG_DAEMON, LOG_INFO, LOG_WARNING
from hamtools.core.loop import Loop
from hamtools.hamd import capture, child
from tests.childfix import PYTHON, report_argv, spec, wait_report


class Log(list):
    def __call__(self, level: int, message: str) -> None:
        self.append(message)


@pytest.fixture
def ham():
    """ham's loop and its Capture; run(spec) starts a child and reads until its output ends."""
    loop = Loop()
    log = Log()
    cap = capture.Capture(loop, log)

    def run(s: dict, *, reap: bool = True) -> int:
        streams = cap.open(s)
        pid = child.start(s, {}, log, stdout=streams.stdout, stderr=streams.stderr)
        streams.attach(pid)
        assert loop.run_until(lambda: cap.reading == 0, timeout=20), "output never ended"
        if reap:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        return pid

    run.capture, run.loop, run.log = cap, loop, log
    yield run
    cap.close()
    loop.close()


def _py(script: str) -> list[str]:
    return [PYTHON, "-c", script]


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- files and rotation -------------------------------------------------------------------

def _lines(first: int, last: int) -> str:
    return "".join(f"{i:04d}" + "x" * 95 + "\n" for i in range(first, last))


def test_file_rotates_at_line_ends_and_keeps_log_keep_old_files(ham, tmp_path):
    path = tmp_path / "svc.log"
    names = [f"{path}.3", f"{path}.2", f"{path}.1", str(path)]
    script = ("import sys\nfor i in range(int(sys.argv[1]), int(sys.argv[2])):\n"
              "    sys.stdout.write(f'{i:04d}' + 'x' * 95 + '\\n')\n")
    s = spec("rot", _py(script) + ["0", "35"], stdout=f"file:{path}", log_max_bytes=1000, log_keep=3)
    ham(s)  # 35 lines of 100 bytes: path.3, .2, .1 full, 5 lines in path
    assert [os.path.getsize(name) for name in names] == [1000, 1000, 1000, 500]
    assert "".join(open(name).read() for name in names) == _lines(0, 35)
    ham(dict(s, argv=_py(script) + ["35", "45"]))  # the next incarnation appends
    assert [os.path.getsize(name) for name in names] == [1000, 1000, 1000, 500]
    assert "".join(open(name).read() for name in names) == _lines(10, 45)  # the oldest file went
    assert not os.path.exists(f"{path}.4")


def test_no_byte_lost_across_many_rotations(ham, tmp_path):
    path = tmp_path / "big.log"
    # 300 000 bytes in writes of odd sizes, lines of varying length, through 64 KiB reads
    script = ("import os\nout = b''.join(b'%d:' % i + b'y' * (i % 97) + b'\\n' for i in range(5000))\n"
              "open(os.environ['EXPECT'], 'wb').write(out)\n"
              "for at in range(0, len(out), 4099):\n    os.write(1, out[at:at + 4099])\n")
    expect = tmp_path / "expect"
    s = spec("big", _py(script), stdout=f"file:{path}", log_max_bytes=32768, log_keep=20,
             env={"EXPECT": str(expect)})
    ham(s)
    kept = sorted((int(name.rsplit(".", 1)[1]) for name in os.listdir(tmp_path)
                   if name.startswith("big.log.")), reverse=True)
    data = b"".join(open(f"{path}.{n}", "rb").read() for n in kept) + path.read_bytes()
    assert data == expect.read_bytes()
    assert all(os.path.getsize(f"{path}.{n}") <= 32768 for n in kept)
    assert all(open(f"{path}.{n}", "rb").read().endswith(b"\n") for n in kept)


def test_existing_file_is_appended_and_counted(tmp_path):
    path = tmp_path / "old.log"
    path.write_bytes(b"a" * 90 + b"\n")
    out = capture.RotatingFile(str(path), 100, 2)
    out.write(b"b" * 9 + b"\n")  # 101 bytes would pass 100: rotate first
    out.close()
    assert (tmp_path / "old.log.1").read_bytes() == b"a" * 90 + b"\n"
    assert path.read_bytes() == b"b" * 9 + b"\n"
    assert oct(path.stat().st_mode & 0o777) == oct(capture.FILE_MODE)


def test_keep_zero_starts_afresh_and_a_long_line_gets_a_file_alone(tmp_path):
    path = tmp_path / "k0.log"
    out = capture.RotatingFile(str(path), 10, 0)
    out.write(b"1234\n")
    out.write(b"a" * 25 + b"\nxy\n")
    assert path.read_bytes() == b"xy\n"
    assert sorted(os.listdir(tmp_path)) == ["k0.log"]
    out.close()
    with pytest.raises(ValueError, match="log_max_bytes must be > 0"):
        capture.RotatingFile(str(path), 0, 1)


def test_partial_lines_wait_for_their_newline_and_over_long_lines_come_in_pieces(ham, tmp_path):
    path = tmp_path / "parts.log"
    script = ("import os, time\nos.write(1, b'hel')\ntime.sleep(0.1)\nos.write(1, b'lo\\n')\n"
              f"os.write(1, b'z' * {capture.LINE_MAX + 10})\ntime.sleep(0.1)\nos.write(1, b'tail')\n")
    ham(spec("parts", _py(script), stdout=f"file:{path}", log_max_bytes=10 ** 6))
    assert path.read_bytes() == b"hello\n" + b"z" * (capture.LINE_MAX + 10) + b"tail"


@pytest.mark.parametrize("keys", [{}, {"umask": 0o022}], ids=["posix_spawn", "fork"])
def test_stderr_to_stdout_keeps_the_order(ham, tmp_path, keys):
    path = tmp_path / "both.log"
    script = ("import os\nfor i in range(3):\n    os.write(1, b'out%d\\n' % i)\n"
              "    os.write(2, b'err%d\\n' % i)\n")
    ham(spec("both", _py(script), stdout=f"file:{path}", stderr="stdout", **keys))
    assert path.read_text() == "out0\nerr0\nout1\nerr1\nout2\nerr2\n"


def test_two_outputs_to_one_path_share_one_file(ham, tmp_path):
    path = tmp_path / "shared.log"
    script = "import os\nos.write(1, b'o' * 59 + b'\\n')\nos.write(2, b'e' * 59 + b'\\n')\n"
    ham(spec("twice", _py(script), stdout=f"file:{path}", stderr=f"file:{path}",
             log_max_bytes=100, log_keep=1))
    # one rotation between the two 60-byte lines, whichever came first
    assert sorted([path.read_text(), (tmp_path / "shared.log.1").read_text()]) == \
        ["e" * 59 + "\n", "o" * 59 + "\n"]


def test_bad_file_is_an_error_before_the_start_and_leaks_nothing(ham, tmp_path):
    before = _open_fds()
    with pytest.raises(FileNotFoundError, match=r"output file /nonexistent/dir/x.log: No such file"):
        ham.capture.open(spec("bad", stdout="syslog", stderr="file:/nonexistent/dir/x.log"))
    with pytest.raises(ValueError, match="unknown output destination 'console'"):
        ham.capture.open(spec("bad", stdout="console"))
    assert _open_fds() == before and ham.capture.reading == 0


def test_abandoned_start_closes_everything(ham, tmp_path):
    before = _open_fds()
    s = spec("never", ["/nonexistent/program"], stdout=f"file:{tmp_path / 'n.log'}", stderr="null")
    streams = ham.capture.open(s)
    with pytest.raises(FileNotFoundError):
        child.start(s, {}, ham.log, stdout=streams.stdout, stderr=streams.stderr)
    streams.abandon()
    assert _open_fds() == before


# -- null, inherit ------------------------------------------------------------------------

def test_null_and_inherit(ham, tmp_path):
    out = tmp_path / "report"
    pid = child.start(spec("n", report_argv(out)), {}, ham.log)
    report = wait_report(pid, out)
    assert (report["fd1"], report["fd2"]) == (os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2"))
    s = spec("n", report_argv(out), stdout="null", stderr="stdout", cwd=str(tmp_path))
    streams = ham.capture.open(s)
    pid = child.start(s, {}, ham.log, stdout=streams.stdout, stderr=streams.stderr)
    streams.attach(pid)
    report = wait_report(pid, out)
    assert (report["fd1"], report["fd2"]) == ("/dev/null", "/dev/null")


# -- syslog -------------------------------------------------------------------------------

def test_syslog_line_per_message_with_the_service_name_pid_and_priorities(ham, tmp_path, monkeypatch):
    where = str(tmp_path / "log.sock")
    syslogd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslogd.bind(where)
    monkeypatch.setenv("HAMTOOLS_SYSLOG_SOCKET", where)
    script = ("import os, time\nos.write(1, b'first ')\ntime.sleep(0.1)\nos.write(1, b'out\\n\\n')\n"
              "os.write(2, b'trouble\\n')\nos.write(1, b'last words')\n")
    pid = ham(spec("chatty", _py(script), stdout="syslog", stderr="syslog"))
    syslogd.settimeout(1)
    got = {}
    for _ in range(3):
        data = syslogd.recv(65536).decode()
        head, message = data.split(": ", 1)
        got[message] = (int(head[1:head.index(">")]), head.rsplit(" ", 1)[1])
    syslogd.settimeout(0.2)
    with pytest.raises(TimeoutError):
        syslogd.recv(65536)  # the empty line sent nothing
    syslogd.close()
    ident = f"chatty[{pid}]"
    assert got == {"first out": (LOG_DAEMON | LOG_INFO, ident),
                   "trouble": (LOG_DAEMON | LOG_WARNING, ident),
                   "last words": (LOG_DAEMON | LOG_INFO, ident)}


# -- never blocking ham -------------------------------------------------------------------

def test_reads_are_bounded_per_wakeup(tmp_path):
    loop = Loop()
    cap = capture.Capture(loop, Log())
    path = tmp_path / "flood.log"
    s = spec("flood", _py("import os\nos.write(1, b'q' * 200000 + b'\\n')\n"), stdout=f"file:{path}",
             log_max_bytes=10 ** 6)
    streams = cap.open(s)
    pid = child.start(s, {}, Log(), stdout=streams.stdout, stderr=streams.stderr)
    streams.attach(pid)
    assert loop.run_until(lambda: cap.reading == 0, timeout=20)
    os.waitpid(pid, 0)
    assert loop.wakeups > 200001 // capture.READ_SIZE  # one read of READ_SIZE at most each
    assert path.read_bytes() == b"q" * 200000 + b"\n"
    cap.close()
    loop.close()


def test_close_takes_what_is_already_written(tmp_path):
    loop = Loop()
    cap = capture.Capture(loop, Log())
    path = tmp_path / "last.log"
    s = spec("last", _py("import os\nos.write(1, b'goodbye\\nno newline')\n"), stdout=f"file:{path}")
    streams = cap.open(s)
    pid = child.start(s, {}, Log(), stdout=streams.stdout, stderr=streams.stderr)
    streams.attach(pid)
    os.waitpid(pid, 0)  # the loop never ran
    cap.close()
    assert path.read_bytes() == b"goodbye\nno newline" and cap.reading == 0
    loop.close()
