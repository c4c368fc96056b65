"""hamtools.ha (libha): every function and ha_connection_ctrl command on real fds, sockets and
stale /proc handles; then recovery through servers killed with SIGKILL and restarted by a
real ham (neutrino coids, unix sockets)."""

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hamtools import ha, neutrino
from hamtools.ha import *
from hamtools.ham import (
    CONDDEATH,
    HREARMAFTERRESTART,
    ND_LOCAL_NODE,
    ham_action_restart,
    ham_attach,
    ham_condition,
    ham_detach_name,
)
from tests.conftest import ROOT
from tests.hamfix import entity_status, ham, wait_for  # noqa: F401
from tests.test_examples import background, example, readline

SERVERS = ROOT / "tests" / "ha_servers.py"


def raises(err: int, call, *args):
    with pytest.raises(OSError) as caught:
        call(*args)
    assert caught.value.errno == err, caught.value
    return caught.value


@pytest.fixture
def sleepers():
    """Live processes whose /proc/PID/status files a test opens; a killed one's goes stale
    (ESRCH, the errno QNX's covers recover on)."""
    procs = []

    def start():
        procs.append(subprocess.Popen(["sleep", "600"]))
        path = status_path(procs[-1])  # its name is python's until the exec has gone through
        wait_for(lambda: Path(path).read_text().startswith("Name:\tsleep\n"), what="sleep's exec")
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def status_path(proc) -> str:
    return f"/proc/{proc.pid}/status"


def names(fd) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def kill(proc) -> None:
    proc.kill()
    proc.wait()


class Peer:
    """One end of a socketpair as an HA-aware connection: kill() closes the far end (EPIPE),
    reconnect() puts a fresh pair's end under the same fd number (a recovery)."""

    def __init__(self):
        self.sock, self.far = socket.socketpair()
        self.fd = self.sock.fileno()
        self.calls = 0

    def kill(self) -> None:
        self.far.close()

    def reconnect(self, coid, rhdl) -> int:
        self.calls += 1
        near, self.far = socket.socketpair()
        os.dup2(near.fileno(), coid, inheritable=False)
        near.close()
        return coid

    def pretend(self, coid, rhdl) -> int:
        """A recovery function that says it recovered but did not: each retransmission fails."""
        self.calls += 1
        return coid

    def close(self) -> None:
        try:
            ha_detach(self.fd)
        except OSError:
            pass
        self.sock.close()
        self.far.close()


@pytest.fixture
def peer():
    made = Peer()
    yield made
    made.close()


# ---- ha_attach / ha_detach --------------------------------------------------------------

def test_constants_have_qnx_values():
    assert HAREPLACERECOVERYFN == 0x0001
    assert [HA_RECOVERY_ACOUNT, HA_RECOVERY_ICOUNT, HA_RECOVERY_SUSPEND, HA_RECOVERY_ENABLE,
            HA_RECOVERY_RESET_ICOUNT, HA_RECOVERY_RESET_ACOUNT] == [1, 2, 3, 4, 5, 6]
    assert {errno.EBADF, errno.ESRCH} <= RECOVERABLE


def test_attach_recovers_and_retransmits(peer):
    assert ha_attach(peer.fd, peer.reconnect, None, 0) == 0
    peer.kill()
    assert ha.write(peer.fd, b"again") == 5
    assert peer.calls == 1
    assert peer.far.recv(16) == b"again"  # the retransmission went to the new peer
    assert recovery_counts(peer.fd) == (1, 0)


def test_attach_twice_is_eexist_and_replace_needs_an_existing_function(peer, tmp_path):
    ha_attach(peer.fd, peer.pretend, None, 0)
    raises(errno.EEXIST, ha_attach, peer.fd, peer.reconnect, None, 0)
    assert ha_attach(peer.fd, peer.reconnect, "handle", HAREPLACERECOVERYFN) == 0
    peer.kill()
    ha.write(peer.fd, b"x")
    assert peer.far.recv(1) == b"x"  # the replacement recovered
    fd = os.open(tmp_path / "plain", os.O_CREAT | os.O_RDWR)
    try:
        raises(errno.EBADF, ha_attach, fd, peer.reconnect, None, HAREPLACERECOVERYFN)
    finally:
        os.close(fd)


def test_attach_bad_arguments(peer, tmp_path):
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    os.close(fd)
    raises(errno.EBADF, ha_attach, fd, peer.reconnect, None, 0)  # closed
    raises(errno.EBADF, ha_attach, -1, peer.reconnect, None, 0)
    raises(errno.EBADF, ha_attach, "3", peer.reconnect, None, 0)
    raises(errno.EINVAL, ha_attach, peer.fd, peer.reconnect, None, 0x2)
    raises(errno.EINVAL, ha_attach, peer.fd, "not callable", None, 0)
    raises(errno.EBADF, ha_detach, peer.fd)  # none of these attached it


def test_rhdl_reaches_the_recovery_function(peer):
    seen = []
    ha_attach(peer.fd, lambda coid, rhdl: seen.append((coid, rhdl)) or peer.reconnect(coid, rhdl), {"k": 1}, 0)
    peer.kill()
    ha.write(peer.fd, b"x")
    assert seen == [(peer.fd, {"k": 1})]


def test_detach_ends_recovery(peer):
    ha_attach(peer.fd, peer.reconnect, None, 0)
    assert ha_detach(peer.fd) == 0
    peer.kill()
    raises(errno.EPIPE, ha.write, peer.fd, b"x")
    assert peer.calls == 0
    raises(errno.EBADF, ha_detach, peer.fd)


def test_giving_up_raises_the_original_error(peer):
    ha_attach(peer.fd, lambda coid, rhdl: -1, None, 0)
    peer.kill()
    raises(errno.EPIPE, ha.write, peer.fd, b"x")
    ha_attach(peer.fd, lambda coid, rhdl: coid + 1, None, HAREPLACERECOVERYFN)  # another coid
    raises(errno.EPIPE, ha.write, peer.fd, b"x")

    def refused(coid, rhdl):
        raise ConnectionRefusedError(errno.ECONNREFUSED, "server not back")

    ha_attach(peer.fd, refused, None, HAREPLACERECOVERYFN)
    err = raises(errno.EPIPE, ha.write, peer.fd, b"x")
    assert err.__context__.errno == errno.ECONNREFUSED  # why the recovery failed
    ha_attach(peer.fd, None, None, HAREPLACERECOVERYFN)  # HA-aware, no function
    raises(errno.EPIPE, ha.write, peer.fd, b"x")


def test_other_errors_are_not_recovered(peer):
    ha_attach(peer.fd, peer.reconnect, None, 0)
    peer.sock.setblocking(False)
    raises(errno.EAGAIN, ha.read, peer.fd, 1)  # nothing to read: not a dead server
    assert peer.calls == 0


def test_a_failure_inside_the_recovery_function_is_not_recovered_again(peer):
    def recover(coid, rhdl):
        peer.calls += 1
        ha.write(coid, b"inside")  # the connection is still dead: this fails, unrecovered
        return coid

    ha_attach(peer.fd, recover, None, 0)
    peer.kill()
    raises(errno.EPIPE, ha.write, peer.fd, b"x")
    assert peer.calls == 1


# ---- ha_connection_ctrl -----------------------------------------------------------------

def test_icount_limits_recoveries_per_failure_and_reset_icount(peer):
    ha_attach(peer.fd, peer.pretend, None, 0)
    assert ha_connection_ctrl(peer.fd, HA_RECOVERY_ICOUNT, 3) == 0
    peer.kill()
    raises(errno.EPIPE, ha.write, peer.fd, b"x")
    assert peer.calls == 3 and recovery_counts(peer.fd) == (3, 3)
    raises(errno.EPIPE, ha.write, peer.fd, b"x")  # still at the limit: no recovery at all
    assert peer.calls == 3
    assert ha_connection_ctrl(peer.fd, HA_RECOVERY_RESET_ICOUNT) == 0
    assert recovery_counts(peer.fd) == (3, 0)
    ha_attach(peer.fd, peer.reconnect, None, HAREPLACERECOVERYFN)
    assert ha.write(peer.fd, b"y") == 1
    assert peer.calls == 4 and recovery_counts(peer.fd) == (4, 0)  # success resets ICOUNT


def test_acount_limits_recoveries_over_the_connection_and_reset_acount(peer):
    ha_attach(peer.fd, peer.reconnect, None, 0)
    ha_connection_ctrl(peer.fd, HA_RECOVERY_ACOUNT, 2)
    for _ in range(2):
        peer.kill()
        ha.write(peer.fd, b"x")
    peer.kill()
    raises(errno.EPIPE, ha.write, peer.fd, b"x")
    assert peer.calls == 2
    assert ha_connection_ctrl(peer.fd, HA_RECOVERY_RESET_ACOUNT) == 0
    assert recovery_counts(peer.fd) == (0, 0)
    ha.write(peer.fd, b"x")
    assert peer.calls == 3
    ha_connection_ctrl(peer.fd, HA_RECOVERY_ACOUNT, -1)  # negative: no limit again
    for _ in range(3):
        peer.kill()
        ha.write(peer.fd, b"x")
    assert peer.calls == 6


def test_suspend_and_enable(peer):
    ha_attach(peer.fd, peer.reconnect, None, 0)
    assert ha_connection_ctrl(peer.fd, HA_RECOVERY_SUSPEND) == 0
    peer.kill()
    raises(errno.EPIPE, ha.write, peer.fd, b"x")
    assert peer.calls == 0
    assert ha_connection_ctrl(peer.fd, HA_RECOVERY_ENABLE) == 0
    assert ha.write(peer.fd, b"x") == 1 and peer.calls == 1


def test_connection_ctrl_bad_arguments(peer):
    raises(errno.EBADF, ha_connection_ctrl, peer.fd, HA_RECOVERY_ENABLE)  # not HA-aware
    ha_attach(peer.fd, peer.reconnect, None, 0)
    raises(errno.EINVAL, ha_connection_ctrl, peer.fd, 7)
    raises(errno.EINVAL, ha_connection_ctrl, peer.fd, 0)
    raises(errno.EINVAL, ha_connection_ctrl, peer.fd, HA_RECOVERY_ACOUNT, None)
    raises(errno.EINVAL, ha_connection_ctrl, peer.fd, HA_RECOVERY_ICOUNT, "3")
    raises(errno.EINVAL, ha_connection_ctrl, peer.fd, HA_RECOVERY_ICOUNT, True)


def test_threads_failing_together_recover_once(peer):
    entered = threading.Event()
    release = threading.Event()

    def slow(coid, rhdl):
        entered.set()
        release.wait(10)
        return peer.reconnect(coid, rhdl)

    ha_attach(peer.fd, slow, None, 0)
    peer.kill()
    results = []
    first = threading.Thread(target=lambda: results.append(ha.write(peer.fd, b"a")))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=lambda: results.append(ha.write(peer.fd, b"b")))
    second.start()  # fails on the dead peer too, then waits for the recovery in progress
    time.sleep(0.05)
    release.set()
    first.join(10)
    second.join(10)
    assert results == [1, 1] and peer.calls == 1
    assert sorted(peer.far.recv(2)) == [ord("a"), ord("b")]


# ---- files: ha_open, ha_creat, ha_reopen, ha_dup, ha_close, the covers --------------------

def test_open_reopen_dup_recover_a_stale_proc_file(sleepers):
    first, second = sleepers(), sleepers()
    checkpoint = {"offset": 0, "nr": 0}

    def recover_conn(oldfd, hdl):
        newfd = ha_reopen(oldfd, status_path(second), os.O_RDONLY)
        os.lseek(newfd, hdl["offset"], os.SEEK_SET)
        hdl["nr"] += 1
        return newfd

    fd = ha_open(status_path(first), os.O_RDONLY, recover_conn, checkpoint, 0)
    head = ha.read(fd, 6)
    assert head == b"Name:\t"
    checkpoint["offset"] += len(head)
    fd2 = ha_dup(fd)
    kill(first)
    assert ha.lseek(fd2, 0, os.SEEK_SET) == 0  # lseek itself succeeds on a dead task's file...
    raises(errno.ESRCH, os.read, fd2, 5)  # ...its reads are stale (the plain os.read)
    ha.lseek(fd2, checkpoint["offset"], os.SEEK_SET)
    assert ha.read(fd2, 5) == b"sleep"  # recovered: reopened, re-seeked, read again
    assert checkpoint["nr"] == 1
    assert names(fd) == names(fd2) == status_path(second)  # the dup names the new file too
    assert ha.fstat(fd).st_ino == os.stat(status_path(second)).st_ino
    assert ha_close(fd) == 0
    raises(errno.EBADF, os.fstat, fd)
    kill(second)  # the record lives on in the dup, with its recovery function
    ha_connection_ctrl(fd2, HA_RECOVERY_ACOUNT, 5)
    assert ha_close(fd2) == 0
    raises(errno.EBADF, ha_connection_ctrl, fd2, HA_RECOVERY_ACOUNT, 5)


def test_dup_shares_the_recovery_function_and_counts(peer):
    ha_attach(peer.fd, peer.pretend, None, 0)
    dup = ha_dup(peer.fd)
    try:
        ha_attach(dup, peer.reconnect, None, HAREPLACERECOVERYFN)  # changes it for both
        ha_connection_ctrl(dup, HA_RECOVERY_ACOUNT, 1)
        peer.kill()
        ha.write(peer.fd, b"x")
        assert peer.calls == 1 and peer.far.recv(1) == b"x"
        assert ha.write(dup, b"y") == 1 and peer.far.recv(1) == b"y"  # the dup was fixed up
        peer.kill()
        raises(errno.EPIPE, ha.write, dup, b"z")  # ACOUNT 1, shared: used up
        assert recovery_counts(peer.fd) == recovery_counts(dup) == (1, 0)
    finally:
        ha_close(dup)


def test_dup_bad_arguments(peer):
    raises(errno.EBADF, ha_dup, peer.fd)  # not HA-aware
    chid = neutrino.ChannelCreate(0)
    coid = ha_ConnectAttach(ND_LOCAL_NODE, 0, chid, 0, 0, None, None, 0)
    try:
        raises(errno.EBADF, ha_dup, coid)  # a channel connection is no file descriptor
    finally:
        ha_ConnectDetach(coid)
        neutrino.ChannelDestroy(chid)


def test_reopen_keeps_the_number_and_leaves_it_alone_on_failure(tmp_path):
    (tmp_path / "a").write_bytes(b"AAAA")
    (tmp_path / "b").write_bytes(b"BBBB")
    fd = os.open(tmp_path / "a", os.O_RDONLY)
    blocker = os.open(tmp_path / "b", os.O_RDONLY)  # open() will not hand out fd's number
    os.set_inheritable(fd, True)
    try:
        assert ha_reopen(fd, tmp_path / "b", os.O_RDONLY) == fd
        assert os.read(fd, 4) == b"BBBB" and os.get_inheritable(fd)
        raises(errno.ENOENT, ha_reopen, fd, tmp_path / "missing", os.O_RDONLY)
        assert names(fd) == str(tmp_path / "b")  # still the file it was
        os.close(fd)
        assert ha_reopen(fd, tmp_path / "a", os.O_RDONLY) == fd  # closed meanwhile: taken again
        assert os.read(fd, 4) == b"AAAA"
    finally:
        os.close(fd)
        os.close(blocker)


def test_creat_open_and_the_write_covers(tmp_path):
    path = tmp_path / "made"
    fd = ha_creat(path, 0o640, None, None, 0)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o640 & ~_umask()
        assert ha.write(fd, b"hello") == 5
        raises(errno.EBADF, ha.read, fd, 1)  # write-only: EBADF, and no function to recover
    finally:
        ha_close(fd)
    fd = ha_open(path, os.O_RDWR, None, None, 0)
    try:
        assert ha.lseek(fd, 1, os.SEEK_SET) == 1 and ha.read(fd, 10) == b"ello"
    finally:
        ha_close(fd)
    raises(errno.ENOENT, ha_open, tmp_path / "nope", os.O_RDONLY, None, None, 0)
    before = set(os.listdir("/proc/self/fd"))
    raises(errno.EINVAL, ha_open, path, os.O_RDONLY, None, None, 0x8)  # attach fails: fd closed
    assert set(os.listdir("/proc/self/fd")) == before
    assert ha_open64 is ha_open and ha_creat64 is ha_creat


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_close_of_a_plain_fd_is_ebadf_and_closes_nothing(tmp_path):
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_RDWR)
    try:
        raises(errno.EBADF, ha_close, fd)
        os.fstat(fd)  # still open
    finally:
        os.close(fd)


def test_fopen_text_and_binary_recover_through_the_file_object(sleepers):
    first, second = sleepers(), sleepers()

    def recover(oldfd, hdl):
        return ha_reopen(oldfd, status_path(second), os.O_RDONLY)

    fp = ha_fopen(status_path(first), "r", recover, None, 0)
    assert fp.readline() == "Name:\tsleep\n"
    kill(first)
    fp.seek(0)
    assert fp.readline() == "Name:\tsleep\n"  # read again from the recovered file
    assert names(fp.fileno()) == status_path(second)
    assert ha_fclose(fp) == 0 and fp.closed
    fb = ha_fopen(status_path(second), "rb", None, None, 0)
    assert fb.read(5) == b"Name:"
    fd = fb.fileno()
    fb.close()  # a plain close of the object detaches too
    raises(errno.EBADF, ha_detach, fd)


def test_fopen_modes(tmp_path):
    path = tmp_path / "f"
    with ha_fopen(path, "w", None, None, 0) as fp:
        fp.write("one\n")
    with ha_fopen(path, "a", None, None, 0) as fp:
        fp.write("two\n")
    fp = ha_fopen(path, "r+b", None, None, 0)
    assert fp.read() == b"one\ntwo\n"
    fp.seek(0)
    fp.write(b"ONE")
    ha_fclose(fp)
    assert path.read_bytes() == b"ONE\ntwo\n"
    for bad in ("x", "rw", "rbt", "", 3):
        raises(errno.EINVAL, ha_fopen, path, bad, None, None, 0)
    with open(path) as plain:
        raises(errno.EBADF, ha_fclose, plain)
        assert not plain.closed


# ---- neutrino covers (no ham) -------------------------------------------------------------

def test_connect_attach_variants_and_bad_arguments():
    chid = neutrino.ChannelCreate(0)
    try:
        coid = ha_ConnectAttach_r(ND_LOCAL_NODE, 0, chid, 0, 0, None, None, 0)
        assert coid > 0
        raises(errno.EEXIST, ha_attach, coid, None, None, 0)  # attached by ha_ConnectAttach
        assert ha_ConnectDetach_r(coid) == 0
        assert ha_ConnectDetach_r(coid) == -errno.EBADF
        assert ha_ConnectAttach_r(ND_LOCAL_NODE, 0, chid + 100, 0, 0, None, None, 0) == -errno.ESRCH
        assert ha_ConnectAttach_r(1, 0, chid, 0, 0, None, None, 0) == -errno.EINVAL
        raises(errno.EINVAL, ha_ConnectAttach, ND_LOCAL_NODE, 0, chid, 0, 0, None, None, 0x4)
        assert ha_ConnectAttach_r(ND_LOCAL_NODE, 0, chid, 0, 0, None, None, 0x4) == -errno.EINVAL
        raises(errno.EBADF, ha_ReConnectAttach, 10_000, ND_LOCAL_NODE, 0, chid, 0, 0)
        plain = neutrino.ConnectAttach(ND_LOCAL_NODE, 0, chid, 0, 0)
        raises(errno.EBADF, ha_ConnectDetach, plain)  # not HA-aware: left connected
        assert plain in neutrino.kernel.connections
        neutrino.ConnectDetach(plain)
    finally:
        neutrino.ChannelDestroy(chid)


def test_reconnect_attach_keeps_the_coid_and_a_failure_leaves_it():
    chid = neutrino.ChannelCreate(0)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                rcvid, msg, _ = neutrino.MsgReceive(chid, 0.05)
            except OSError:
                continue
            if rcvid:
                neutrino.MsgReply(rcvid, 7, msg.upper())

    server = threading.Thread(target=serve)
    server.start()
    coid = ha_ConnectAttach(ND_LOCAL_NODE, 0, chid, 0, 0, None, None, 0)
    try:
        assert ha.MsgSend(coid, b"hi") == (7, b"HI")
        raises(errno.ESRCH, ha_ReConnectAttach, coid, ND_LOCAL_NODE, 0, chid + 100, 0, 0)
        assert ha.MsgSend(coid, b"still") == (7, b"STILL")  # the old connection stands
        assert ha_ReConnectAttach(coid, ND_LOCAL_NODE, 0, chid, 0, 0) == coid
        assert ha.MsgSend(coid, b"new") == (7, b"NEW")
        ha.MsgSendPulse(coid, -1, 3, 4)
    finally:
        stop.set()
        server.join()
        ha_ConnectDetach(coid)
        neutrino.ChannelDestroy(chid)


# ---- sockets (no ham) ---------------------------------------------------------------------

class EchoServer:
    """A unix stream server in a thread: answers b"<tag> <line>"; stop() closes everything."""

    def __init__(self, path, tag: bytes):
        self.path, self.tag = str(path), tag
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn.makefile("rb") as lines:
            try:
                for line in lines:
                    conn.sendall(self.tag + b" " + line)
            except OSError:
                pass

    def stop(self):
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            conn.shutdown(socket.SHUT_RDWR)
        self.thread.join(5)
        os.unlink(self.path)


def test_socket_send_and_recv_recover_with_reconnect(tmp_path):
    address = str(tmp_path / "s")
    server = EchoServer(address, b"one")
    calls = []

    def recover(fd, rhdl):
        calls.append(fd)
        ha_reconnect(fd, rhdl, timeout=5)
        os.write(fd, b"resent\n")  # the state to rebuild: here, a request to send again
        return fd

    plain = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    plain.connect(address)
    plain.settimeout(5)
    sock = ha_socket(plain, recover, address, 0)
    assert isinstance(sock, HaSocket) and sock.gettimeout() == 5  # the socket's own attributes
    fd = sock.fileno()
    try:
        sock.sendall(b"a\n")
        assert sock.recv(64) == b"one a\n"
        server.stop()
        server = EchoServer(address, b"two")
        sock.sendall(b"b\n")  # EPIPE: recovered, then sent again to the new server
        assert calls == [fd]
        got = b""
        while got.count(b"\n") < 2:  # a stream: the two answers may come as one
            got += sock.recv(64)
        assert got == b"two resent\ntwo b\n"
        assert sock.fileno() == fd and sock.gettimeout() == 5
        assert not os.get_blocking(fd)  # the timeout's O_NONBLOCK came along
        server.stop()
        server = EchoServer(address, b"three")
        assert sock.recv(64) == b"three resent\n"  # EOF: recovered, the recv retransmitted
        assert calls == [fd, fd] and recovery_counts(fd) == (2, 0)
    finally:
        sock.close()
        server.stop()
    raises(errno.EBADF, ha_detach, fd)


def test_every_socket_operation_recovers(peer):
    def reconnect_and_greet(coid, rhdl):
        peer.reconnect(coid, rhdl)
        peer.far.sendall(b"hi")  # the new server speaks first
        return coid

    sock = ha_socket(peer.sock, reconnect_and_greet, None, 0)
    peer.kill()
    assert sock.send(b"s") == 1  # EPIPE: recovered, sent again
    assert peer.far.recv(1) == b"s" and sock.recv(2) == b"hi"
    peer.kill()
    assert sock.sendmsg([b"m", b"n"]) == 2 and peer.far.recv(2) == b"mn"
    assert sock.recv(2) == b"hi"
    peer.kill()
    buffer = bytearray(8)
    assert sock.recv_into(buffer) == 2 and buffer[:2] == b"hi"  # EOF, recovered, retransmitted
    peer.kill()
    data, ancdata, _, _ = sock.recvmsg(8)
    assert (data, ancdata) == (b"hi", [])
    assert peer.calls == 4 and recovery_counts(peer.fd) == (4, 0)


def test_socket_past_the_counts(tmp_path):
    address = str(tmp_path / "s")
    server = EchoServer(address, b"one")
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.connect(address)
    sock = ha_socket(raw, lambda fd, rhdl: ha_reconnect(fd, rhdl), address, 0)
    try:
        ha_connection_ctrl(sock.fileno(), HA_RECOVERY_ACOUNT, 0)
        sock.sendall(b"a\n")
        assert sock.recv(64) == b"one a\n"  # accepted and served: its close is a clean end
        server.stop()
        assert sock.recv(64) == b""  # the end of the stream, as without libha
        raises(errno.EPIPE, sock.sendall, b"x\n")
        assert recovery_counts(sock.fileno()) == (0, 0)
    finally:
        sock.close()


def test_reconnect_failure_leaves_the_socket(tmp_path):
    address = str(tmp_path / "s")
    server = EchoServer(address, b"one")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    try:
        raises(errno.ENOENT, ha_reconnect, sock.fileno(), str(tmp_path / "none"))
        sock.sendall(b"q\n")
        assert sock.recv(64) == b"one q\n"
    finally:
        sock.close()
        server.stop()


# ---- against a real ham: servers killed with SIGKILL and restarted by it -------------------

def supervise(name: str, *args) -> int:
    """Attach a server with a CONDDEATH restart action, as QNX's examples do; its pid."""
    line = " ".join([sys.executable, str(SERVERS), *map(str, args)])
    ehdl = ham_attach(name, ND_LOCAL_NODE, -1, line, 0)
    chdl = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    ham_action_restart(chdl, "restart", line, HREARMAFTERRESTART)
    return running(name)


def running(name: str, other_than: int | None = None) -> int:
    return wait_for(lambda: (s := entity_status(name)) and s["run"] == "running" and s["pid"]
                    not in (None, other_than) and s["pid"], what=f"{name} running")


def retrying(call, deadline: float):
    """A recovery function's patience while the restarted server sets up its channel/socket."""
    while True:
        try:
            return call()
        except OSError as err:
            if err.errno not in (errno.ESRCH, errno.ECONNREFUSED, errno.ENOENT) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class ServerHandle:
    """rhdl of the tests' recovery functions: which entity, its last pid, the recoveries."""

    def __init__(self, name: str, pid: int):
        self.name, self.pid, self.nr = name, pid, 0
        self.pending = None  # a request sent but not answered, resent after a reconnect


def test_msgsend_recovers_after_ham_restarts_the_server(ham):
    pid = supervise("nserver", "neutrino")

    def recover(coid, hdl):
        hdl.pid = running(hdl.name, other_than=hdl.pid)  # ham's restart, via its status
        hdl.nr += 1
        return retrying(lambda: ha_ReConnectAttach(coid, ND_LOCAL_NODE, hdl.pid, 1, 0, 0),
                        time.monotonic() + 10)

    hdl = ServerHandle("nserver", pid)
    coid = retrying(lambda: ha_ConnectAttach(ND_LOCAL_NODE, pid, 1, 0, 0, recover, hdl, 0),
                    time.monotonic() + 10)
    try:
        assert MsgSend(coid, b"one") == (0, b"%d one" % pid)
        os.kill(pid, signal.SIGKILL)
        status, reply = MsgSend(coid, b"two")  # ESRCH, recovered, retransmitted
        assert (status, reply) == (0, b"%d two" % hdl.pid) and hdl.pid != pid
        assert hdl.nr == 1 and entity_status("nserver")["restarts"] == 1
        assert recovery_counts(coid) == (1, 0)
        second = hdl.pid
        os.kill(second, signal.SIGKILL)
        running("nserver", other_than=second)  # dead for sure: the pulse cannot reach it
        MsgSendPulse(coid, -1, 1, 2)  # ESRCH too: recovered, sent again
        assert hdl.nr == 2 and hdl.pid != second
        assert MsgSend(coid, b"three") == (0, b"%d three" % hdl.pid) and hdl.nr == 2
    finally:
        ha_ConnectDetach(coid)


def _ha_unix_client(address: str, hdl: ServerHandle) -> HaSocket:
    def recover(fd, hdl):
        hdl.pid = running(hdl.name, other_than=hdl.pid)
        hdl.nr += 1
        retrying(lambda: ha_reconnect(fd, address, timeout=10), time.monotonic() + 10)
        if hdl.pending is not None:  # the state the dead server had: our unanswered request
            os.write(fd, hdl.pending)
        return fd

    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(20)  # a bug fails the test instead of hanging it
    retrying(lambda: raw.connect(address), time.monotonic() + 10)
    return ha_socket(raw, recover, hdl, 0)


def test_socket_send_and_blocked_recv_recover_after_ham_restarts_the_server(ham, tmp_path):
    address = str(tmp_path / "srv.sock")
    pid = supervise("userver", "unix", address)
    hdl = ServerHandle("userver", pid)
    sock = _ha_unix_client(address, hdl)
    try:
        sock.sendall(b"ping\n")
        assert sock.recv(64) == b"%d ping\n" % pid
        os.kill(pid, signal.SIGKILL)
        running("userver", other_than=pid)
        sock.sendall(b"after\n")  # EPIPE on the dead connection: recovered, resent
        second = hdl.pid
        assert second != pid and sock.recv(64) == b"%d after\n" % second
        # A recv blocked when the server dies: EOF, recovered; the recovery resends the request.
        hdl.pending = b"hold %d\n" % second
        sock.sendall(hdl.pending)
        answers = []
        waiter = threading.Thread(target=lambda: answers.append(sock.recv(64)))
        waiter.start()
        time.sleep(0.2)
        assert not answers  # the server holds it
        os.kill(second, signal.SIGKILL)
        waiter.join(20)
        third = hdl.pid
        assert answers == [b"%d hold %d\n" % (third, second)] and third not in (pid, second)
        assert hdl.nr == 2 and recovery_counts(sock.fileno()) == (2, 0)
    finally:
        sock.close()


def test_acount_exhausted_across_ham_restarts_then_reset(ham, tmp_path):
    address = str(tmp_path / "srv.sock")
    pid = supervise("userver", "unix", address)
    hdl = ServerHandle("userver", pid)
    sock = _ha_unix_client(address, hdl)
    fd = sock.fileno()
    try:
        ha_connection_ctrl(fd, HA_RECOVERY_ACOUNT, 1)
        os.kill(pid, signal.SIGKILL)
        running("userver", other_than=pid)  # dead for sure: a send now cannot reach it
        sock.sendall(b"one\n")
        assert sock.recv(64) == b"%d one\n" % hdl.pid and hdl.nr == 1
        second = hdl.pid
        os.kill(second, signal.SIGKILL)
        third = running("userver", other_than=second)
        raises(errno.EPIPE, sock.sendall, b"two\n")  # the one recovery is used up
        assert hdl.nr == 1
        ha_connection_ctrl(fd, HA_RECOVERY_RESET_ACOUNT)
        sock.sendall(b"three\n")
        assert sock.recv(64) == b"%d three\n" % third and hdl.nr == 2
    finally:
        sock.close()


# ---- the QNX recovery example, its filesystem server restarted by ham ---------------------

CONTENT = "".join(chr(c) for c in range(ord("0"), ord("z") + 1))


def fuse_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (its filesystem server mounts a FUSE filesystem)"
    if not os.path.exists("/dev/fuse"):
        return "needs /dev/fuse (modprobe fuse)"
    return None


def serves(path) -> bool:
    try:
        with open(path) as served:
            return served.read() == CONTENT
    except OSError:
        return False


def test_the_qnx_recovery_example_rereads_at_its_checkpoint_after_ham_restarts_the_server(ham, tmp_path):
    reason = fuse_unavailable()
    if reason:
        if os.environ.get("HAMTOOLS_FUSE_REQUIRED"):  # .ci/run sets it: CI must run this
            pytest.fail(f"the FUSE example is required but {reason}")
        pytest.skip(reason)
    source = tmp_path / "testfile"
    source.write_text(CONTENT)
    net = tmp_path / "net"
    net.mkdir()
    testfile = net / "testfile"
    line = f"{sys.executable} {ROOT / 'scripts' / 'examples' / 'fs_server.py'} {net} {source}"
    client = None
    try:  # seed 002's fs-nfs2 monitor: ham restarts the server when it dies
        done = example(ham, "nfs_monitor.py", "--line", line, "--delay", "1",
                       "--mount1", "/bin/true", "--mount2", "/bin/true")
        assert done.returncode == 0, done.stdout + done.stderr
        first = running("Fs-nfs2")
        wait_for(lambda: serves(testfile), what="the filesystem mounted")
        client = background(ham, "ha_recovery.py", testfile, "--sleep", "60")
        assert readline(client) == f"read {CONTENT[:15].encode()!r}"
        os.kill(first, signal.SIGKILL)  # the client's fd is stale for good (ENOTCONN)
        running("Fs-nfs2", other_than=first)
        wait_for(lambda: serves(testfile), what="the filesystem mounted again")
        client.stdin.write("\n")  # the end of QNX's sleep(18)
        client.stdin.flush()
        out, err = client.communicate(timeout=20)
        assert (out, err, client.returncode) == (
            f"read {CONTENT[15:30].encode()!r}\ntotal recoveries, 1\n", "", 0)
    finally:
        if client is not None:
            client.kill()
            client.communicate()
        server = entity_status("Fs-nfs2")
        if server is not None:
            ham_detach_name(ND_LOCAL_NODE, "Fs-nfs2", 0)  # no restart of what is stopped next
            if server["pid"]:
                os.kill(server["pid"], signal.SIGTERM)  # it unmounts
        wait_for(lambda: str(net) not in Path("/proc/mounts").read_text(), what="the server unmounted")
