"""ham against a second user and against malformed input (SPEC §3 Security).

The second uid is created here (useradd); its processes run Debian's /usr/bin/python3, since
the default interpreter may live in root's 0700 home, with a world-readable copy of hamtools.
"""

import errno
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import textwrap

import pytest

from hamtools.core import wire
from hamtools.core import hamproto as protocol
from tests.conftest import ROOT
from tests.hamfix import HamRunner, kill_leftovers, wait_for

USER = "hamtest"
PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def second_user():
    if os.geteuid() != 0:
        pytest.skip("creating a second uid needs root (CI runs as root)")
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is missing: install Debian's python3")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "--user-group", USER], check=True)
    return pwd.getpwnam(USER)


@pytest.fixture
def open_ham(second_user, monkeypatch, request):
    """ham in a directory the second user can reach; `group=True` gives it the control socket."""
    top = tempfile.mkdtemp(prefix="ham-sec.")
    os.chmod(top, 0o755)
    lib = os.path.join(top, "lib")
    shutil.copytree(ROOT / "hamtools", os.path.join(lib, "hamtools"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    run_dir = os.path.join(top, "run")
    os.mkdir(run_dir)
    extra = ["--group", USER] if getattr(request, "param", False) else []
    runner = HamRunner(run_dir, extra).start()
    runner.lib = lib
    monkeypatch.setenv("HAM_RUNTIME_DIR", run_dir)
    yield runner
    from hamtools.ham import ham_status

    try:
        pids = {e["pid"] for e in ham_status()["entities"] if e["pid"]}
    except OSError:
        pids = set()
    runner.stop()
    kill_leftovers(pids)
    shutil.rmtree(top, ignore_errors=True)


def as_user(runner, user, code: str, timeout=20) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": runner.lib, "HAM_RUNTIME_DIR": runner.dir}
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], env=env, user=user.pw_uid,
                          group=user.pw_gid, extra_groups=[], capture_output=True, text=True,
                          timeout=timeout, cwd="/")


TRY = """
import errno, os, sys
from hamtools.ham import *
def attempt(label, call):
    try:
        call()
        print(label, "ok")
    except OSError as err:
        print(label, errno.errorcode.get(err.errno, err.errno))
"""


def results(done) -> dict:
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines())


def test_second_user_on_the_client_socket(open_ham, second_user, request):
    from hamtools.ham import (CONDDEATH, ND_LOCAL_NODE, ham_attach, ham_condition, ham_status)

    root_svc = ham_attach("rootsvc", ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    ham_condition(root_svc, CONDDEATH, "death", 0)
    victim = subprocess.Popen(["/bin/sleep", "600"])
    request.addfinalizer(victim.kill)
    done = as_user(open_ham, second_user, TRY + """
e = None
def self_attach():
    global e
    e = ham_attach_self("mine", 0, 0, 0, 0)
attempt("attach_self", self_attach)
attempt("state_own", lambda: ham_entity_condition_state(e, 3, 0))
attempt("spawn", lambda: ham_attach("evil", 0, -1, "/bin/sleep 600", 0))
attempt("adopt_root", lambda: ham_attach("pid1", 0, 1, None, 0))
attempt("stop", lambda: ham_stop())
attempt("verbose_set", lambda: ham_verbose(None, VERBOSE_SET, 9))
attempt("verbose_get", lambda: ham_verbose(None, VERBOSE_GET, 0))
attempt("state_root", lambda: ham_entity_condition_state(ham_entity_handle(0, "rootsvc", 0), 3, 0))
c = ham_condition_handle(0, "rootsvc", "death", 0)
attempt("notify_self", lambda: ham_action_notify_pulse(c, "tellme", 0, os.getpid(), 1, 1, 1, 0))
attempt("notify_root", lambda: ham_action_notify_signal(c, "killinit", 0, 1, 9, 0, 0, 0))
attempt("restart_root", lambda: ham_action_restart(ham_condition(ham_entity_handle(0, "rootsvc", 0), CONDABNORMALDEATH, "x", 0), "r", "/bin/sh", 0))
attempt("control_root", lambda: ham_entity_control(ham_entity_handle(0, "rootsvc", 0), HDISABLE, 0))
attempt("remove_root", lambda: ham_condition_remove(c, 0))
# Through an entity of its own: ham would send as root, so a root target is still refused.
mine = ham_condition_state(e, "mine", CONDSTATEANY, CONDSTATEANY, 0)
attempt("own_notify_root_signal", lambda: ham_action_notify_signal(mine, "k", 0, VICTIM, 9, 0, 0, 0))
attempt("own_notify_root_pulse", lambda: ham_action_notify_pulse(mine, "p", 0, VICTIM, 1, 1, 1, 0))
attempt("own_notify_self", lambda: ham_action_notify_signal(mine, "me", 0, os.getpid(), 28, 0, 0, 0))
attempt("notify_nobody", lambda: ham_action_notify_pulse(mine, "gone", 0, 2**22 + 7, 1, 1, 1, 0))
attempt("publish_mine", lambda: ham_entity_condition_state(e, 4, 0))
""".replace("VICTIM", str(victim.pid)))
    got = results(done)
    assert got == {
        "attach_self": "ok", "state_own": "ok", "spawn": "EPERM", "adopt_root": "EPERM",
        "stop": "EPERM", "verbose_set": "EPERM", "verbose_get": "ok", "state_root": "EPERM",
        "notify_self": "ok", "notify_root": "EPERM", "restart_root": "EPERM",
        "control_root": "EPERM", "remove_root": "EPERM", "own_notify_root_signal": "EPERM",
        "own_notify_root_pulse": "EPERM", "own_notify_self": "ok", "notify_nobody": "ESRCH",
        "publish_mine": "ok",
    }
    assert victim.poll() is None  # root's process was never signalled
    entities = {e["name"]: e for e in ham_status()["entities"]}
    assert "evil" not in entities and entities["rootsvc"]["enabled"]
    assert [a["name"] for a in entities["rootsvc"]["conditions"][0]["actions"]] == ["tellme"]


def test_heartbeats_only_from_the_entitys_own_processes(open_ham, second_user):
    from hamtools.ham import ND_LOCAL_NODE, ham_attach_self, ham_detach_self

    mine = ham_attach_self("rootworker", 10**9, 3, 5, 0)
    try:
        done = as_user(open_ham, second_user, """
import subprocess, sys
beat = subprocess.run([sys.executable, "-m", "hamtools", "heartbeat", "rootworker"],
                      capture_output=True, text=True)
print(beat.returncode, beat.stderr.strip())
""")
        code, message = done.stdout.strip().split(" ", 1)
        assert code == "1" and message == "heartbeat: rootworker: not authorised to beat for this entity"
    finally:
        ham_detach_self(mine, 0)


@pytest.mark.parametrize("open_ham", [True], indirect=True)
def test_control_socket_runs_requests_as_the_callers_uid(open_ham, second_user):
    from hamtools.ham import ham_status

    done = as_user(open_ham, second_user, TRY + """
attempt("spawn", lambda: ham_attach("theirs", 0, -1, "/bin/sleep 600", 0))
""")
    assert results(done) == {"spawn": "ok"}
    pid = wait_for(lambda: next(e["pid"] for e in ham_status()["entities"] if e["name"] == "theirs"))
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    assert fields["Uid"].split()[0] == str(second_user.pw_uid)
    assert fields["Gid"].split()[0] == str(second_user.pw_gid)
    assert fields["Groups"].split() in ([], [str(second_user.pw_gid)])  # root's groups gone


# ---- malformed input ------------------------------------------------------------------------

@pytest.fixture
def raw(open_ham):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(os.path.join(open_ham.dir, "control"))
    sock.settimeout(10)
    yield sock
    sock.close()


def answer(sock, body: bytes, msg_id=1):
    sock.send(wire.encode(wire.SEND, msg_id, body))
    frame = wire.decode_datagram(sock.recv(wire.MAX_FRAME))
    status, data = wire.decode_status(frame)
    return frame.kind, status, data


@pytest.mark.parametrize("body,err", [
    (b"", errno.EINVAL), (b"\xff\xfe", errno.EINVAL), (b"status [1,2]", errno.EINVAL),
    (b"attach {not json", errno.EINVAL), (b"frobnicate {}", errno.ENOSYS),
    (b'attach {"name": 5}', errno.EINVAL), (b'attach {"name": "x", "pid": "7"}', errno.EINVAL),
    (b'condition {"path": "a/b/c", "type": 1}', errno.EINVAL),
    (b'action {"path": "e/c/a", "kind": "restart", "params": []}', errno.ENOENT),
    (b"status " + b"[" * 60000, errno.EINVAL),  # JSON nested past the recursion limit
    (b'heartbeat \xff', errno.EINVAL),
    # found by the fuzzer: each was an internal error (EIO) before
    (b'entity {"name": "\\ud800"}', errno.EINVAL),
    (b'attach_self {"name": "x", "hp": 1' + b"0" * 400 + b'}', errno.EINVAL),
])
def test_malformed_requests_get_errors(raw, body, err):
    kind, status, _ = answer(raw, body)
    assert kind == wire.REPLY and status == -err
    assert answer(raw, protocol.encode_request("status"))[1] == 0  # and ham goes on


def test_bad_frames_and_oversized_datagrams(raw):
    raw.send(b"garbage that is no frame")
    frame = wire.decode_datagram(raw.recv(100))
    assert frame.kind == wire.ERROR and wire.decode_status(frame)[0] == errno.EBADMSG
    raw.send(wire.HEADER.pack(wire.MAGIC, 1, wire.SEND, 5, 0) + b"x" * (wire.MAX_FRAME + 4096))
    frame = wire.decode_datagram(raw.recv(100))
    assert (frame.msg_id, wire.decode_status(frame)[0]) == (5, errno.EMSGSIZE)
    raw.send(wire.encode_pulse(wire.Pulse(code=77, value=1)))  # a stray pulse: ignored
    assert answer(raw, protocol.encode_request("status"))[1] == 0


def test_peers_that_vanish_or_stall_do_not_hurt_ham(open_ham):
    path = os.path.join(open_ham.dir, "control")
    for _ in range(20):  # disconnect mid-request
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.connect(path)
        sock.send(wire.encode(wire.SEND, 1, protocol.encode_request("status")))
        sock.close()
    staller = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    staller.connect(path)
    staller.setblocking(False)
    request = wire.encode(wire.SEND, 1, protocol.encode_request("status"))
    try:
        for _ in range(5000):  # never reads an answer: ham drops it once its buffer is full
            staller.send(request)
    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
        pass
    from hamtools.ham import ham_status

    assert ham_status()["ham_pid"] == open_ham.proc.pid
    assert open_ham.proc.poll() is None
    staller.close()


def test_one_user_can_neither_crowd_out_others_nor_grow_the_tree_without_bound(open_ham, second_user):
    from hamtools.hamd.ops import MAX_ENTITIES_PER_UID
    from hamtools.hamd.server import MAX_PEERS_PER_UID

    done = as_user(open_ham, second_user, TRY + f"""
import socket, time
held = []
for _ in range({MAX_PEERS_PER_UID} + 8):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(os.environ["HAM_RUNTIME_DIR"] + "/client")
    held.append(s)
time.sleep(0.3)
dropped = 0
for s in held:
    s.setblocking(False)
    try:
        dropped += s.recv(1) == b""
    except BlockingIOError:
        pass
print("dropped", dropped)
for s in held:
    s.close()
made = 0
for n in range({MAX_ENTITIES_PER_UID} + 1):
    try:
        ham_entity(f"p{{n}}", 0, 0)
        made += 1
    except OSError as err:
        print("refused", made, errno.errorcode[err.errno])
        break
""", timeout=60)
    got = results(done)
    assert got == {"dropped": "8", "refused": f"{MAX_ENTITIES_PER_UID} ENOMEM"}
    from hamtools.ham import ham_entity, ham_status

    ham_entity("roots", 0, 0)  # root is not held to the user's quota
    assert "roots" in {e["name"] for e in ham_status()["entities"]}
    assert "refusing a connection" in open_ham.read_log()


# ---- a hostile local user: every request, forged beats/states/pulses, floods (issue 9) ----------

RAW = """
import errno, json, os, socket, sys
sys.path.insert(0, os.environ["PYTHONPATH"])
from hamtools.core import wire, hamproto

def ask(path, op, args, msg_id=1):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(os.environ["HAM_RUNTIME_DIR"] + "/" + path)
    except OSError as err:
        return errno.errorcode[err.errno]
    with s:
        s.settimeout(10)
        s.send(wire.encode(wire.SEND, msg_id, hamproto.encode_request(op, args)))
        frame = wire.decode_datagram(s.recv(wire.MAX_FRAME))
        while frame.kind == wire.MORE:
            frame = wire.decode_datagram(s.recv(wire.MAX_FRAME))
        status, _ = wire.decode_status(frame)
        return "ok" if status == 0 else errno.errorcode[-status]
"""

# Every request ham serves, aimed at root's entity by a user who owns nothing, on the client
# socket: refused unless it only reads, registers a notification of the user's own, or is the
# user's own self-attachment.
FOREIGN_REQUESTS = [
    ("attach", {"name": "evil", "line": "/bin/true"}, "EPERM"),
    ("attach", {"name": "pid1", "pid": 1}, "EPERM"),
    ("attach_self", {"name": "rootsvc"}, "EEXIST"),
    ("entity", {"name": "rootsvc"}, "EEXIST"),
    ("detach", {"name": "rootsvc"}, "EPERM"),
    ("detach_self", {"name": "rootsvc"}, "EINVAL"),
    ("condition", {"path": "rootsvc/mine", "type": 1}, "ok"),  # a condition to hang its notifications on
    ("action", {"path": "rootsvc/death/r", "kind": "restart", "params": {"line": "/bin/sh"}}, "EPERM"),
    ("action", {"path": "rootsvc/death/x", "kind": "execute", "params": {"line": "/bin/sh"}}, "EPERM"),
    ("action", {"path": "rootsvc/death/w", "kind": "waitfor", "params": {"delay": 10}}, "EPERM"),
    ("action", {"path": "rootsvc/death/k", "kind": "notify_signal",
                "params": {"pid": 1, "signum": 9, "value": 0}}, "EPERM"),
    ("action", {"path": "rootsvc/death/p", "kind": "notify_pulse",
                "params": {"pid": 1, "chid": 1, "code": 1, "value": 0}}, "EPERM"),
    ("action", {"path": "rootsvc/death/h", "kind": "heartbeat_healthy", "params": {}}, "EPERM"),
    ("fail", {"path": "rootsvc/death/log/f", "kind": "execute", "params": {"line": "/bin/sh"}}, "EPERM"),
    ("remove", {"path": "rootsvc/death"}, "EPERM"),
    ("remove", {"path": "rootsvc/death/log"}, "EPERM"),
    ("remove", {"path": "rootsvc"}, "EPERM"),
    ("control", {"path": "rootsvc", "command": 2, "flags": 0}, "EPERM"),  # HDISABLE
    ("control", {"path": "rootsvc/death", "command": 3, "flags": 1}, "EPERM"),  # HADDFLAGS
    ("control", {"path": "rootsvc", "command": 6, "flags": 0}, "ok"),  # HGETFLAGS: a read
    ("handle", {"path": "rootsvc/death"}, "ok"),
    ("run", {"name": "rootsvc", "command": "stop"}, "EPERM"),
    ("run", {"name": "rootsvc", "command": "restart"}, "EPERM"),
    ("service_set", {"name": "rootsvc", "settings": {"restart": "never"}}, "EPERM"),
    ("group_set", {"name": "g", "settings": {"strategy": "one_for_all"}}, "EPERM"),
    ("reload", {}, "EPERM"),
    ("state", {"name": "rootsvc", "state": 3}, "EPERM"),
    ("raise", {"name": "rootsvc", "rtype": 1, "rclass": 1, "rseverity": 1}, "EPERM"),
    ("heartbeat", {"name": "rootsvc"}, "EPERM"),
    ("status", {}, "ok"),
    ("verbose", {"op": 3, "value": 9}, "EPERM"),  # VERBOSE_SET
    ("verbose", {"op": 4, "value": 0}, "ok"),  # VERBOSE_GET
    ("reexec", {"zipapp": "/tmp"}, "EPERM"),  # with --group: allowed, and refused by ham (no ham in /tmp)
    ("stop", {}, "EPERM"),  # last: with --group it is allowed, and ham stops
]


def root_service(name="rootsvc"):
    """Root's entity, with a death condition holding a log action."""
    from hamtools.ham import (CONDDEATH, ND_LOCAL_NODE, ham_action_log, ham_attach, ham_condition,
                              ham_status)

    ehdl = ham_attach(name, ND_LOCAL_NODE, -1, "/bin/sleep 600", 0)
    death = ham_condition(ehdl, CONDDEATH, "death", 0)
    ham_action_log(death, "log", "rootsvc died", 0, 0, 0)
    return next(e for e in ham_status()["entities"] if e["name"] == name)


def test_every_request_is_covered_by_the_hostile_table():
    from hamtools.hamd.ops import Requests

    ops = {name[3:] for name in dir(Requests) if name.startswith("op_")}
    assert ops == {op for op, _, _ in FOREIGN_REQUESTS}


@pytest.mark.parametrize("open_ham", [False, True], indirect=True, ids=["control-closed", "control-group"])
def test_a_hostile_user_tries_every_request_on_both_sockets(open_ham, second_user):
    import json

    from hamtools.hamd.hlog import LIMITED_LINES

    root_service()
    done = as_user(open_ham, second_user, RAW + f"""
table = json.loads({json.dumps([[op, args] for op, args, _ in FOREIGN_REQUESTS])!r})
print(json.dumps({{sock: [ask(sock, op, args) for op, args in table] for sock in ("client", "control")}}))
""")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["client"] == [want for _, _, want in FOREIGN_REQUESTS]
    if "--group" in open_ham.extra_args:  # ham's group: it may administer (what it starts runs as itself)
        assert "EPERM" not in got["control"] and got["control"][0] == "ok"
    else:  # the control socket is 0660 root:root: no way in
        assert set(got["control"]) == {"EACCES"}
    open_ham.stop()  # closing the log writes the count of refusals left out
    log = open_ham.read_log()
    assert f"(uid {second_user.pw_uid}) on the client socket: not permitted: attach by command" in log
    refused = sum(want == "EPERM" for _, _, want in FOREIGN_REQUESTS)
    if "--group" not in open_ham.extra_args:
        assert f"{refused - LIMITED_LINES} more refused requests of uid {second_user.pw_uid} not logged" in log


def test_refusals_are_logged_but_a_flood_of_them_is_bounded(open_ham, second_user):
    from hamtools.hamd.hlog import LIMITED_LINES

    root_service()
    done = as_user(open_ham, second_user, RAW + """
import time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(os.environ["HAM_RUNTIME_DIR"] + "/client")
for n in range(3000):  # refused beats, states and garbage, interleaved (which defeats a repeat count)
    s.send(wire.encode(wire.SEND, n, hamproto.encode_request("heartbeat", {"name": "rootsvc"})))
    s.send(wire.encode(wire.SEND, n, hamproto.encode_request("state", {"name": "rootsvc", "state": n})))
    s.send(b"garbage %d" % n)
    for _ in range(3):
        s.recv(wire.MAX_FRAME)
print("sent")
""", timeout=60)
    assert done.stdout.strip() == "sent", done.stderr
    from hamtools.ham import ham_status

    assert ham_status()["ham_pid"] == open_ham.proc.pid
    open_ham.stop()  # closing the log writes the counts
    lines = [line for line in open_ham.read_log().splitlines() if f"uid {second_user.pw_uid}" in line]
    refused = [line for line in lines if "refused heartbeat" in line or "refused state" in line]
    malformed = [line for line in lines if "malformed message from" in line]
    assert 1 <= len(refused) <= LIMITED_LINES and 1 <= len(malformed) <= LIMITED_LINES
    counts = [line for line in lines if "not logged" in line]
    kinds = {kind for line in counts for kind in ("refused requests", "malformed messages", "paused peers")
             if f"more {kind} of uid" in line}
    # (9,000 datagrams as fast as ham answers: past UID_RATE, so its peers were paused too)
    assert len(counts) == len(kinds) and {"refused requests", "malformed messages"} <= kinds and len(lines) < 25
    assert f"{6000 - len(refused)} more refused requests of uid {second_user.pw_uid}" in "\n".join(counts)


def test_forged_beats_states_and_notifications_for_anothers_entity(open_ham, second_user):
    """A second user beats for root's entity by a pulse on its own connection, by sd_notify
    (WATCHDOG=1, STATUS=, READY=1, MAINPID=), and by naming the entity's pid in its
    credentials: nothing reaches root's entity, and each refusal is logged."""
    root = root_service()
    from hamtools.ham import ham_attach_self, ham_detach_self

    worker = ham_attach_self("rootworker", 10**9, 50, 60, 0)
    try:
        done = as_user(open_ham, second_user, RAW + f"""
import struct
from hamtools.core import sdnotify
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(os.environ["HAM_RUNTIME_DIR"] + "/client")
for _ in range(100):
    s.send(wire.encode_pulse(wire.Pulse(code=hamproto.HBEAT_CODE, value=0)))
print("status", ask("client", "status", {{}}))
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.connect(os.environ["HAM_RUNTIME_DIR"] + "/notify")
n.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
for text in ("WATCHDOG=1", "STATUS=forged", "READY=1", "MAINPID=1", "WATCHDOG=trigger"):
    n.send(text.encode())
try:  # the kernel checks credentials: only root may name another pid
    n.sendmsg([b"WATCHDOG=trigger"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                                      struct.pack("3i", {root['pid']}, os.getuid(), os.getgid()))])
    print("creds", "sent")
except PermissionError:
    print("creds", "EPERM")
""")
        assert results(done) == {"status": "ok", "creds": "EPERM"}
        from hamtools.ham import ham_status

        wait_for(lambda: "refused: no entity of its own" in open_ham.read_log(), what="the refusal logged")
        entities = {e["name"]: e for e in ham_status()["entities"]}
        assert entities["rootsvc"]["notify"] is None and entities["rootsvc"]["pid"] == root["pid"]
        assert entities["rootworker"]["beats"] == 0 and entities["rootworker"]["heartbeat_state"] == "healthy"
        assert f"uid {second_user.pw_uid}): a pulse" not in open_ham.read_log()  # beats are pulses: no noise
    finally:
        ham_detach_self(worker, 0)


def test_forged_pulses_to_anothers_channel_carry_the_forgers_uid(open_ham, second_user):
    """A channel's abstract name has no permissions: anyone may connect and pulse. The
    receiver sees who did (SO_PEERCRED), and `pulsedemo listen` ignores what is not ham's."""
    import sys

    from hamtools.applets.pulsedemo import PCODEINETDDETACH
    from hamtools.ham import (CONDDEATH, ND_LOCAL_NODE, ham_attach, ham_condition, ham_detach_name)

    for name, cond in (("inetd", "death"), ("Fs-nfs2", "Death")):
        ham_condition(ham_attach(name, ND_LOCAL_NODE, -1, "/bin/sleep 600", 0), CONDDEATH, cond, 0)
    listener = subprocess.Popen([sys.executable, "-m", "hamtools", "pulsedemo", "listen"], cwd=ROOT,
                                env=open_ham.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        words = listener.stdout.readline().split()
        assert words[0] == "Listening:", words
        pid, chid = int(words[2].rstrip(",")), int(words[4])
        done = as_user(open_ham, second_user, f"""
from hamtools.neutrino import ConnectAttach, MsgSendPulse
coid = ConnectAttach(0, {pid}, {chid}, 0, 0)
MsgSendPulse(coid, -1, {PCODEINETDDETACH}, 13)  # "inetd detached, so quitting"
print("sent")
""")
        assert done.stdout.strip() == "sent", done.stderr
        ignored = listener.stderr.readline().strip()
        assert ignored.startswith(f"pulsedemo: listen: ignored pulse code {PCODEINETDDETACH} from pid ")
        assert ignored.endswith(f"(uid {second_user.pw_uid}): not ham")
        ham_detach_name(ND_LOCAL_NODE, "inetd", 0)  # ham's own detach pulse: that one counts
        assert listener.stdout.readline().strip() == "Inetd detached, so quitting"
        assert listener.wait(10) == 0
    finally:
        listener.kill()
        listener.communicate()


def test_a_hostile_user_sending_oversized_frames_and_stalling_is_survived(open_ham, second_user):
    done = as_user(open_ham, second_user, RAW + """
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(os.environ["HAM_RUNTIME_DIR"] + "/client")
s.settimeout(10)
s.send(wire.HEADER.pack(wire.MAGIC, 1, wire.SEND, 5, 0) + b"x" * (wire.MAX_FRAME + 4096))
frame = wire.decode_datagram(s.recv(100))
print("oversized", errno.errorcode[wire.decode_status(frame)[0]])
s.send(wire.HEADER.pack(wire.MAGIC, 1, wire.SEND, 6, 2**31))  # a header promising 2 GiB
frame = wire.decode_datagram(s.recv(100))
print("promise", errno.errorcode[wire.decode_status(frame)[0]])
stall = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
stall.connect(os.environ["HAM_RUNTIME_DIR"] + "/client")
stall.setblocking(False)
request = wire.encode(wire.SEND, 1, hamproto.encode_request("status"))
import select, time
deadline = time.monotonic() + 30
try:
    while time.monotonic() < deadline:  # asks and asks, never reads an answer
        try:
            stall.send(request)
        except BlockingIOError:
            select.select([], [stall], [], 0.05)
    print("dropped", "no")
except (BrokenPipeError, ConnectionResetError):
    print("dropped", "yes")
idle = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # connects and says nothing
idle.connect(os.environ["HAM_RUNTIME_DIR"] + "/client")
print("after", ask("client", "status", {}))
""", timeout=60)
    assert results(done) == {"oversized": "EMSGSIZE", "promise": "EMSGSIZE", "dropped": "yes", "after": "ok"}
    from hamtools.ham import ham_status

    assert ham_status()["ham_pid"] == open_ham.proc.pid
    log = open_ham.read_log()
    assert f"(uid {second_user.pw_uid}): bad frame: datagram over the size limit" in log
    assert f"(uid {second_user.pw_uid}) does not read its answers: dropping it" in log


def test_a_hostile_user_cannot_fill_the_room_of_anothers_entity(open_ham, second_user):
    """Notifications on root's entity are the user's right (QNX's client adds conditions to
    inetd), but 64 of them would leave root no room: a user who owns nothing there gets a
    quarter of each room (conditions, actions of a condition, fail items of an action)."""
    from hamtools.hamd.model import FOREIGN_ROOM

    root_service()
    done = as_user(open_ham, second_user, RAW + """
def fill(make):
    for n in range(100):
        got = make(n)
        if got != "ok":
            return f"{n} {got}"
print("conditions", fill(lambda n: ask("client", "condition", {"path": f"rootsvc/c{n}", "type": 1})))
print("actions", fill(lambda n: ask("client", "action", {"path": f"rootsvc/death/a{n}", "kind": "log",
                                                          "params": {"message": "x"}})))
print("fails", fill(lambda n: ask("client", "fail", {"path": f"rootsvc/death/log/f{n}", "kind": "log",
                                                      "params": {"message": "x"}})))
""", timeout=60)
    assert results(done) == {"conditions": f"{FOREIGN_ROOM['condition']} ENOMEM",
                             "actions": f"{FOREIGN_ROOM['action']} ENOMEM",
                             "fails": f"{FOREIGN_ROOM['action-fail']} ENOMEM"}
    from hamtools.ham import (CONDDEATH, ham_action_log, ham_condition, ham_condition_handle,
                              ham_entity_handle)

    ham_condition(ham_entity_handle(0, "rootsvc", 0), CONDDEATH, "roots", 0)  # root still has room
    ham_action_log(ham_condition_handle(0, "rootsvc", "death", 0), "rootlog", "x", 0, 0, 0)
