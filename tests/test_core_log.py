"""hamtools.core.log: syslog datagrams as PROG[pid] with LOG_DAEMON, stderr lines, no blocking."""

import os
import re
import socket

from hamtools.core.log import LOG_DAEMON, LOG_ERR, LOG_INFO, Log, Syslog


def _dgram_server(path):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    return server


def test_syslog_line_is_rfc3164_with_pid_and_daemon_facility(tmp_path):
    server = _dgram_server(tmp_path / "log")
    sys_log = Syslog("sockmon", path=str(tmp_path / "log"))
    assert sys_log.send(LOG_ERR, "server dead")
    line = server.recv(4096).decode()
    assert re.fullmatch(rf"<{LOG_DAEMON | LOG_ERR}>\w{{3}} [ \d]\d \d\d:\d\d:\d\d "
                        rf"sockmon\[{os.getpid()}\]: server dead", line), line
    assert line.startswith("<27>")
    sys_log.close()
    server.close()


def test_syslog_reconnects_after_syslogd_restart_and_drops_when_absent(tmp_path):
    path = tmp_path / "log"
    server = _dgram_server(path)
    sys_log = Syslog("x", path=str(path))
    assert sys_log.send(LOG_INFO, "one")
    server.close()
    os.unlink(path)
    assert not sys_log.send(LOG_INFO, "lost")  # no syslogd: dropped, never raised
    assert sys_log.dropped == 1
    server = _dgram_server(path)  # syslogd is back
    assert sys_log.send(LOG_INFO, "two")
    assert server.recv(4096).endswith(b"x[%d]: two" % os.getpid())
    server.close()


def test_syslog_stream_socket_gets_nul_terminated_lines(tmp_path):
    path = tmp_path / "log"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    sys_log = Syslog("x", path=str(path))
    assert sys_log.send(LOG_INFO, "hello")
    conn, _ = server.accept()
    assert conn.recv(4096).endswith(b": hello\0")
    conn.close()
    server.close()


def test_full_syslog_queue_drops_instead_of_blocking(tmp_path):
    server = _dgram_server(tmp_path / "log")  # never reads
    sys_log = Syslog("x", path=str(tmp_path / "log"))
    for _ in range(2000):
        sys_log.send(LOG_INFO, "y" * 1000)
    assert sys_log.dropped > 0
    server.close()


def test_log_writes_stderr_and_syslog(tmp_path, capsys, monkeypatch):
    server = _dgram_server(tmp_path / "log")
    monkeypatch.setenv("HAMTOOLS_SYSLOG_SOCKET", str(tmp_path / "log"))
    log = Log("sockmon")
    log.warning("careful")
    assert capsys.readouterr().err == f"sockmon[{os.getpid()}]: careful\n"
    assert server.recv(4096).startswith(b"<28>")
    Log("sockmon", stderr=False, syslog=False).error("nowhere")
    assert capsys.readouterr().err == ""
    log.close()
    server.close()
