"""hamtools.neutrino with real processes, threads, sockets and signals."""

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from hamtools.core import wire
from hamtools.neutrino import (
    _NTO_CHF_COID_DISCONNECT,
    _NTO_CHF_DISCONNECT,
    _NTO_CHF_THREAD_DEATH,
    _NTO_CHF_UNBLOCK,
    _PULSE_CODE_COIDDEATH,
    _PULSE_CODE_DISCONNECT,
    _PULSE_CODE_THREADDEATH,
    _PULSE_CODE_UNBLOCK,
    EOK,
    ChannelCreate,
    ChannelDestroy,
    ConnectAttach,
    ConnectDetach,
    MsgError,
    MsgReceive,
    MsgReceivePulse,
    MsgReply,
    MsgSend,
    MsgSendPulse,
    channel_address,
    gettid,
)
from tests.conftest import ROOT

PRELUDE = "import os, sys, signal, time, errno\nfrom hamtools.neutrino import *\n"


def child(code: str, *args) -> subprocess.Popen:
    """A Python child process running `code` with hamtools.neutrino imported."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 10) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


@pytest.fixture
def channel():
    made = []

    def create(flags=0):
        chid = ChannelCreate(flags)
        made.append(chid)
        return chid

    yield create
    for chid in made:
        try:
            ChannelDestroy(chid)
        except OSError:
            pass


def receive(chid, timeout=10):
    return MsgReceive(chid, timeout=timeout)


def test_message_round_trip_with_sender_credentials(channel):
    chid = channel()
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        print(MsgSend(coid, b"question"))
    """, os.getpid(), chid)
    rcvid, msg, info = receive(chid)
    assert rcvid > 0 and msg == b"question"
    assert (info.pid, info.uid, info.gid, info.chid) == (client.pid, os.getuid(), os.getgid(), chid)
    assert info.msglen == 8
    MsgReply(rcvid, 42, b"answer")
    assert finish(client) == "(42, b'answer')\n"


def test_msg_error_raises_oserror_in_the_client_and_eok_returns_zero(channel):
    chid = channel()
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        try:
            MsgSend(coid, b"a")
        except OSError as err:
            print(errno.errorcode[err.errno])
        print(MsgSend(coid, b"b"))
    """, os.getpid(), chid)
    MsgError(receive(chid).rcvid, errno.EPERM)
    MsgError(receive(chid).rcvid, EOK)
    assert finish(client) == "EPERM\n(0, b'')\n"


def test_pulse_carries_code_value_and_sender(channel):
    chid = channel()
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        MsgSendPulse(coid, -1, 17, 2**31 + 3)
        MsgSendPulse(coid, -1, -5, -9)
        print("sent")
    """, os.getpid(), chid)
    first, second = receive(chid), receive(chid)
    assert first.rcvid == 0 and (first.msg.code, first.msg.value) == (17, -(2**31) + 3)
    assert (first.msg.pid, first.msg.uid) == (client.pid, os.getuid())
    assert (second.msg.code, second.msg.value) == (-5, -9)
    assert finish(client) == "sent\n"


def test_argument_errors(channel):
    chid = channel()
    coid = ConnectAttach(0, 0, chid)
    with pytest.raises(OSError) as bad:
        MsgSendPulse(coid, -1, 128, 0)
    assert bad.value.errno == errno.EINVAL
    with pytest.raises(OSError) as bad:
        ConnectAttach(1, 0, chid)
    assert bad.value.errno == errno.EINVAL
    with pytest.raises(OSError) as bad:
        ConnectAttach(0, 0, 999)
    assert bad.value.errno == errno.ESRCH
    with pytest.raises(OSError) as bad:
        MsgSend(123456, b"")
    assert bad.value.errno == errno.EBADF
    with pytest.raises(OSError) as bad:
        MsgReply(987654, 0)
    assert bad.value.errno == errno.ESRCH
    with pytest.raises(OSError) as bad:
        ConnectDetach(987654)
    assert bad.value.errno == errno.EINVAL
    with pytest.raises(OSError) as bad:
        MsgReceive(999)
    assert bad.value.errno == errno.EINVAL
    ConnectDetach(coid)


def test_receive_timeout(channel):
    chid = channel()
    started = time.monotonic()
    with pytest.raises(OSError) as bad:
        MsgReceive(chid, timeout=0.05)
    assert bad.value.errno == errno.ETIMEDOUT and time.monotonic() - started >= 0.05


def test_a_server_with_no_descriptor_free_rests_instead_of_spinning():
    # Its table full, the server cannot accept a client: MsgReceive must wait out its timeout
    # asleep (a readable listener polled again at once took all of a core), and the client
    # is served once descriptors are free.
    server = child("""
        chid = ChannelCreate(0)
        print(chid, flush=True)
        sys.stdin.readline()  # the client has connected and sent its pulse
        filler = []
        try:
            while True:
                filler.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        started = time.process_time()
        try:
            MsgReceive(chid, timeout=1)
        except OSError as err:
            print(errno.errorcode[err.errno], round(time.process_time() - started, 2), flush=True)
        for fd in filler[-4:]:
            os.close(fd)
        pulse = MsgReceive(chid, timeout=5).msg
        print(pulse.code, pulse.value)
    """)
    chid = int(server.stdout.readline())
    coid = ConnectAttach(0, server.pid, chid)
    MsgSendPulse(coid, -1, 5, 7)
    server.stdin.write("go\n")
    server.stdin.flush()
    timed_out, cpu = server.stdout.readline().split()
    assert timed_out == "ETIMEDOUT" and float(cpu) < 0.3, cpu
    assert finish(server) == "5 7\n"
    ConnectDetach(coid)


def test_channel_is_the_spec_abstract_name(channel):
    chid = channel()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(channel_address(os.getpid(), chid))
    assert channel_address(os.getpid(), chid) == f"\0hamtools/chan/{os.getpid()}/{chid}"
    sock.close()


def test_receive_pulse_leaves_messages_queued(channel):
    chid = channel()
    coid = ConnectAttach(0, 0, chid)
    answers = []
    sender = threading.Thread(target=lambda: answers.append(MsgSend(coid, b"msg")))
    sender.start()
    time.sleep(0.1)
    MsgSendPulse(coid, -1, 3, 33)
    assert MsgReceivePulse(chid, timeout=5).value == 33
    rcvid, msg, _ = receive(chid)
    assert msg == b"msg"
    MsgReply(rcvid, 1)
    sender.join(5)
    assert answers == [(1, b"")]
    ConnectDetach(coid)


# ---- DISCONNECT --------------------------------------------------------------------------

DOUBLE_ATTACH = """
    pid, chid = int(sys.argv[1]), int(sys.argv[2])
    a = ConnectAttach(0, pid, chid)
    b = ConnectAttach(0, pid, chid)
    MsgSend(a, b"first")
    ConnectDetach(a)
    MsgSend(b, b"second")
    sys.stdin.readline()
    ConnectDetach(b)
    print("done", flush=True)
    sys.stdin.readline()
"""


def test_disconnect_only_after_the_last_detach(channel):
    chid = channel(_NTO_CHF_DISCONNECT)
    client = child(DOUBLE_ATTACH, os.getpid(), chid)
    first = receive(chid)
    MsgReply(first.rcvid, 0)
    second = receive(chid)
    assert second.msg == b"second" and second.info.scoid == first.info.scoid
    MsgReply(second.rcvid, 0)
    with pytest.raises(OSError) as bad:  # one connection left: no pulse yet
        MsgReceive(chid, timeout=0.3)
    assert bad.value.errno == errno.ETIMEDOUT
    client.stdin.write("\n")
    client.stdin.flush()
    pulse = MsgReceivePulse(chid, timeout=10)
    assert pulse.code == _PULSE_CODE_DISCONNECT and pulse.scoid == first.info.scoid
    ConnectDetach(pulse.scoid)
    client.stdin.write("\n")
    assert finish(client) == "done\n"


def test_disconnect_when_the_client_is_killed(channel):
    chid = channel(_NTO_CHF_DISCONNECT)
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        MsgSend(coid, b"hi")
        time.sleep(60)
    """, os.getpid(), chid)
    rcvid, _, info = receive(chid)
    MsgReply(rcvid, 0)
    client.kill()
    pulse = MsgReceivePulse(chid, timeout=10)
    assert (pulse.code, pulse.scoid) == (_PULSE_CODE_DISCONNECT, info.scoid)
    client.wait()


def test_no_disconnect_pulse_without_the_flag(channel):
    chid = channel(0)
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        MsgSend(coid, b"hi")
        ConnectDetach(coid)
    """, os.getpid(), chid)
    MsgReply(receive(chid).rcvid, 0)
    client.wait(10)
    with pytest.raises(OSError) as bad:
        MsgReceive(chid, timeout=0.3)
    assert bad.value.errno == errno.ETIMEDOUT


# ---- THREADDEATH -------------------------------------------------------------------------

def test_thread_death_one_pulse_per_thread_with_its_tid(channel):
    chid = channel(_NTO_CHF_THREAD_DEATH)
    with pytest.raises(OSError) as busy:
        ChannelCreate(_NTO_CHF_THREAD_DEATH)
    assert busy.value.errno == errno.EBUSY
    tids, release = [], threading.Event()

    def worker():
        tids.append(gettid())
        release.wait(10)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    release.set()
    dead = [MsgReceivePulse(chid, timeout=10) for _ in threads]
    assert {p.code for p in dead} == {_PULSE_CODE_THREADDEATH}
    assert sorted(p.value for p in dead) == sorted(tids) and len(set(tids)) == 4
    assert gettid() == 1 or threading.current_thread() is not threading.main_thread()


def test_thread_death_channel_frees_its_slot_when_destroyed():
    chid = ChannelCreate(_NTO_CHF_THREAD_DEATH)
    ChannelDestroy(chid)
    ChannelDestroy(ChannelCreate(_NTO_CHF_THREAD_DEATH))


def test_thread_ids_in_a_fresh_process_start_at_two():
    proc = child("""
        chid = ChannelCreate(_NTO_CHF_THREAD_DEATH)
        import threading
        for _ in range(5):
            threading.Thread(target=time.sleep, args=(0.01,)).start()
        print(sorted(MsgReceivePulse(chid).value for _ in range(5)), gettid())
    """)
    assert finish(proc) == "[2, 3, 4, 5, 6] 1\n"


# ---- COIDDEATH ---------------------------------------------------------------------------

SERVER = """
    chid = ChannelCreate(0)
    print(chid, flush=True)
    while True:
        rcvid, msg, info = MsgReceive(chid)
        if rcvid:
            MsgReply(rcvid, 0, msg)
"""


def test_coid_death_when_the_server_is_killed(channel):
    watch = channel(_NTO_CHF_COID_DISCONNECT)
    with pytest.raises(OSError) as busy:
        ChannelCreate(_NTO_CHF_COID_DISCONNECT)
    assert busy.value.errno == errno.EBUSY
    server = child(SERVER)
    coid = ConnectAttach(0, server.pid, int(server.stdout.readline()))
    assert MsgSend(coid, b"ping") == (0, b"ping")
    with pytest.raises(OSError) as bad:  # alive: no pulse
        MsgReceivePulse(watch, timeout=0.2)
    assert bad.value.errno == errno.ETIMEDOUT
    server.kill()
    pulse = MsgReceivePulse(watch, timeout=10)
    assert (pulse.code, pulse.value) == (_PULSE_CODE_COIDDEATH, coid)
    with pytest.raises(OSError) as bad:
        MsgSend(coid, b"anyone?")
    assert bad.value.errno == errno.ESRCH
    with pytest.raises(OSError):  # reported once only
        MsgReceivePulse(watch, timeout=0.2)
    ConnectDetach(coid)
    server.wait()


def test_coid_attached_while_the_watcher_waits_is_watched(channel):
    watch = channel(_NTO_CHF_COID_DISCONNECT)
    server = child(SERVER)
    server_chid = int(server.stdout.readline())
    got = []
    waiter = threading.Thread(target=lambda: got.append(MsgReceivePulse(watch, timeout=10)))
    waiter.start()
    time.sleep(0.1)  # the waiter is in poll() before the coid exists
    coid = ConnectAttach(0, server.pid, server_chid)
    server.kill()
    waiter.join(10)
    assert got and (got[0].code, got[0].value) == (_PULSE_CODE_COIDDEATH, coid)
    ConnectDetach(coid)
    server.wait()


def test_server_death_while_reply_blocked_is_esrch(channel):
    server = child("""
        chid = ChannelCreate(0)
        print(chid, flush=True)
        MsgReceive(chid)
        os._exit(3)
    """)
    coid = ConnectAttach(0, server.pid, int(server.stdout.readline()))
    with pytest.raises(OSError) as bad:
        MsgSend(coid, b"never answered")
    assert bad.value.errno == errno.ESRCH
    ConnectDetach(coid)
    server.wait()


# ---- UNBLOCK -----------------------------------------------------------------------------

CTRL_C_CLIENT = """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
    print("sending", flush=True)
    try:
        print("returned", MsgSend(coid, b"block me"), flush=True)
    except KeyboardInterrupt as interrupt:
        answer = interrupt.__context__
        print("interrupt", errno.errorcode[answer.errno] if answer else "after reply", flush=True)
"""


def test_unblock_pulse_and_client_stays_blocked_until_msg_error(channel):
    chid = channel(_NTO_CHF_UNBLOCK)
    client = child(CTRL_C_CLIENT, os.getpid(), chid)
    assert client.stdout.readline() == "sending\n"
    rcvid, msg, _ = receive(chid)
    client.send_signal(signal.SIGINT)
    pulse = MsgReceivePulse(chid, timeout=10)
    assert (pulse.code, pulse.value) == (_PULSE_CODE_UNBLOCK, rcvid)
    client.send_signal(signal.SIGINT)  # a second Ctrl-C changes nothing
    time.sleep(0.3)
    assert client.poll() is None, "a REPLY-blocked client must stay blocked"
    MsgError(rcvid, errno.EINTR)
    assert finish(client) == "interrupt EINTR\n"


def test_unblock_then_reply_delivers_the_interrupt_after_the_reply(channel):
    chid = channel(_NTO_CHF_UNBLOCK)
    client = child(CTRL_C_CLIENT, os.getpid(), chid)
    client.stdout.readline()
    rcvid = receive(chid).rcvid
    client.send_signal(signal.SIGINT)
    assert MsgReceivePulse(chid, timeout=10).code == _PULSE_CODE_UNBLOCK
    MsgReply(rcvid, 5, b"late")
    assert finish(client) == "interrupt after reply\n"


def test_without_the_flag_a_reply_blocked_client_is_released(channel):
    chid = channel(0)
    client = child(CTRL_C_CLIENT, os.getpid(), chid)
    client.stdout.readline()
    rcvid = receive(chid).rcvid
    client.send_signal(signal.SIGINT)
    with pytest.raises(OSError):  # no pulse: the kernel lets the client go by itself
        MsgReceive(chid, timeout=0.5)
    assert finish(client) == "interrupt EINTR\n"
    with pytest.raises(OSError) as gone:
        MsgReply(rcvid, 0)
    assert gone.value.errno == errno.ESRCH


def test_a_send_blocked_client_is_withdrawn_before_the_server_sees_it(channel):
    chid = channel(_NTO_CHF_UNBLOCK)
    client = child(CTRL_C_CLIENT, os.getpid(), chid)
    client.stdout.readline()
    time.sleep(0.2)  # the message is queued, not received: the client is SEND-blocked
    client.send_signal(signal.SIGINT)
    time.sleep(0.2)
    with pytest.raises(OSError) as nothing:
        MsgReceive(chid, timeout=0.3)
    assert nothing.value.errno == errno.ETIMEDOUT
    assert finish(client) == "interrupt EINTR\n"


# ---- bad peers ---------------------------------------------------------------------------

def raw_peer(chid) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(channel_address(os.getpid(), chid))
    sock.settimeout(10)
    return sock


def serve_in_background(chid, until: threading.Event, log: list):
    def loop():
        while not until.is_set():
            try:
                rcvid, msg, info = MsgReceive(chid, timeout=0.05)
            except OSError as err:
                if err.errno != errno.ETIMEDOUT:
                    log.append(err)
                continue
            log.append(msg)
            if rcvid:
                try:
                    MsgReply(rcvid, 0, b"ok:" + msg)
                except OSError as err:
                    log.append(err)

    thread = threading.Thread(target=loop)
    thread.start()
    return thread


def test_bad_peers_get_errors_and_never_stop_the_server(channel):
    chid = channel(_NTO_CHF_DISCONNECT)
    stop, log = threading.Event(), []
    server = serve_in_background(chid, stop, log)
    try:
        garbage = raw_peer(chid)
        garbage.send(b"\x00\x01garbage")
        frame = wire.decode_datagram(garbage.recv(100))
        assert frame.kind == wire.ERROR and wire.decode_status(frame)[0] == errno.EBADMSG

        garbage.send(wire.HEADER.pack(wire.MAGIC, 1, wire.SEND, 9, wire.MAX_BODY + 1000)
                     + b"x" * (wire.MAX_BODY + 1000))
        frame = wire.decode_datagram(garbage.recv(100))
        assert (frame.msg_id, wire.decode_status(frame)[0]) == (9, errno.EMSGSIZE)

        garbage.send(wire.encode_reply(4, 0))  # replies only travel to clients
        assert wire.decode_status(wire.decode_datagram(garbage.recv(100)))[0] == errno.EBADMSG

        half = raw_peer(chid)
        half.shutdown(socket.SHUT_WR)  # half-closed: read as a disconnect

        dying = child("""
            coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
            MsgSendPulse(coid, -1, 1, 1)
            os.kill(os.getpid(), signal.SIGKILL)
        """, os.getpid(), chid)
        dying.wait(10)

        coid = ConnectAttach(0, 0, chid)  # a well-behaved client is still served
        assert MsgSend(coid, b"still alive") == (0, b"ok:still alive")
        ConnectDetach(coid)
        garbage.close()
        half.close()
    finally:
        stop.set()
        server.join(10)
    assert not server.is_alive()
    assert not [e for e in log if isinstance(e, OSError)]


def test_reply_to_a_client_that_died_is_esrch(channel):
    chid = channel()
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        MsgSend(coid, b"then die")
    """, os.getpid(), chid)
    rcvid = receive(chid).rcvid
    client.kill()
    client.wait()
    with pytest.raises(OSError) as gone:
        MsgReply(rcvid, 0, b"too late")
    assert gone.value.errno == errno.ESRCH


def test_a_message_from_a_client_that_died_before_receive_is_dropped(channel):
    chid = channel()
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        MsgSend(coid, b"orphan")
    """, os.getpid(), chid)
    time.sleep(0.3)
    client.kill()
    client.wait()
    with pytest.raises(OSError) as nothing:
        MsgReceive(chid, timeout=0.3)
    assert nothing.value.errno == errno.ETIMEDOUT


def test_a_forked_child_owns_none_of_the_parents_channels(channel):
    channel(_NTO_CHF_THREAD_DEATH)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            ChannelCreate(_NTO_CHF_THREAD_DEATH)  # the parent's slot is not ours
            os.write(write_end, f"ok {gettid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 100) == b"ok 1"
    os.waitpid(pid, 0)
    os.close(read_end)


def test_oversized_messages_and_replies_are_emsgsize_and_lose_nothing(channel):
    chid = channel()
    client = child("""
        coid = ConnectAttach(0, int(sys.argv[1]), int(sys.argv[2]))
        try:
            MsgSend(coid, b"x" * (64 * 1024 + 1))
        except OSError as err:
            print("send", errno.errorcode[err.errno])
        status, reply = MsgSend(coid, b"small")
        print("reply", status, len(reply))
    """, os.getpid(), chid)
    rcvid = receive(chid).rcvid
    with pytest.raises(OSError) as big:
        MsgReply(rcvid, 0, b"y" * (64 * 1024))
    assert big.value.errno == errno.EMSGSIZE
    MsgReply(rcvid, 7, b"y" * 100)  # the rcvid was not used up: the client gets this one
    assert finish(client).split("\n")[:2] == ["send EMSGSIZE", "reply 7 100"]
