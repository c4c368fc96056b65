"""Fuzz targets for every decoder that reads what others send or write (issue 9, item 2), each
held to its documented error type, with a hang guard.

hypothesis, not atheris: these decoders are pure Python and most of their input is structured
(frames around JSON requests, sd_notify assignments, startup-file lines, TOML documents), which
hypothesis generates directly and shrinks to a minimal failing example; a byte mutator would
spend its time failing the first check (the frame's magic, JSON's syntax). hypothesis is pure
Python and runs inside pytest (the CI run: tests/test_fuzz.py); atheris needs libFuzzer built
for the interpreter. Each target also gets raw bytes or text, so the byte-level paths are
covered too.

TARGETS maps a name to (strategy, check); check(example) returns normally or raises the
documented error, which it catches itself; anything else escaping is a bug. The long run by
hand is `scripts/fuzz --minutes 30`.
"""

import errno
import os
import signal
import socket
import struct
import tempfile
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hamtools.core import cjson, hamproto, sdnotify, wire
from hamtools.core.wire import ProtocolError
from tests.hamfix import in_process_ham

HANG_SECONDS = 10  # one example running this long is a hang, however loaded the machine


class Hang(Exception):
    pass


@contextmanager
def hang_guard(seconds: float = HANG_SECONDS):
    def expired(*_):
        raise Hang(f"one example ran over {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def fuzz_test(name: str, **options):
    """TARGETS[name] as a hypothesis test (call it to run), each example under the hang guard;
    options are hypothesis settings (max_examples, database, derandomize...)."""
    strategy, check = TARGETS[name]

    @settings(deadline=None, suppress_health_check=list(HealthCheck), **options)
    @given(strategy)
    def run(example):
        with hang_guard():
            check(example)

    return run


# ---- strategies ---------------------------------------------------------------------------

ANY_CHARACTER = st.characters(blacklist_categories=())  # lone surrogates too: JSON's \ud800 makes them


def _text(max_size: int = 40, alphabet=ANY_CHARACTER):
    return st.text(alphabet, max_size=max_size)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**65, max_value=2**65)
    | st.sampled_from([0, -1, 1, 2**31 - 1, 2**31, -2**31, 2**63, 10**400, -10**400]) | st.floats()
    | _text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text(), inner, max_size=4),
    max_leaves=12)


@st.composite
def frames(draw) -> bytes:
    """Datagrams around a frame header: well formed or off in one field, or plain bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=64))
    magic = draw(st.sampled_from([wire.MAGIC, wire.MAGIC, 0, 0x514E]))
    version = draw(st.sampled_from([wire.VERSION, wire.VERSION, 0, 2, 255]))
    kind = draw(st.integers(0, 8))
    msg_id = draw(st.integers(-2**31, 2**31 - 1))
    body = draw(st.binary(max_size=40) | st.just(wire.Pulse(code=2, value=0).pack()))
    length = draw(st.sampled_from([len(body)] * 4 + [len(body) + 1, 0, wire.MAX_BODY + 1, 2**32 - 1]))
    return wire.HEADER.pack(magic, version, kind, msg_id, length) + body


# ---- wire: frames, streams, long replies, pulses --------------------------------------------

def check_datagram(example) -> None:
    data, truncated = example
    try:
        frame = wire.decode_datagram(data, truncated)
    except ProtocolError:
        return
    assert not truncated
    assert wire.encode(frame.kind, frame.msg_id, frame.body) == data


def check_stream(chunks: list[bytes]) -> None:
    decoder, got = wire.Decoder(), []
    try:
        for chunk in chunks:
            got += decoder.feed(chunk)
    except ProtocolError:
        return
    whole = b"".join(chunks)
    encoded = b"".join(wire.encode(f.kind, f.msg_id, f.body) for f in got)
    assert whole == encoded + whole[len(encoded):] and decoder.pending == len(whole) - len(encoded)


def check_long_reply(datagrams: list[bytes]) -> None:
    answer = wire.LongReply(1, limit=256)
    try:
        for data in datagrams:
            done = answer.feed(wire.decode_datagram(data))
            if done is not None:
                assert done.kind != wire.MORE
                return
    except ProtocolError:
        return


def check_pulse(data: bytes) -> None:
    try:
        pulse = wire.Pulse.unpack(data)
    except ProtocolError:
        return
    assert wire.Pulse.unpack(pulse.pack()) == pulse


# ---- hamproto: requests (daemon side) and answers (client side) -----------------------------

OPS = ["attach", "attach_self", "entity", "detach", "detach_self", "condition", "action", "fail",
       "remove", "control", "handle", "run", "service_set", "group_set", "reload", "state",
       "raise", "heartbeat", "status", "verbose", "stop"]


@st.composite
def request_bodies(draw) -> bytes:
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return draw(st.binary(max_size=80))
    op = draw(st.sampled_from(OPS) | _text()).encode("utf-8", "surrogatepass")
    if choice == 1:
        return op + b" " + draw(st.binary(max_size=60))
    return op + b" " + cjson.dumps(draw(json_values)).encode()


def check_request(body: bytes) -> None:
    try:
        op, args = hamproto.decode_request(body)
    except hamproto.BadRequest:
        return
    assert isinstance(op, str) and isinstance(args, dict)
    cjson.dumps(args).encode()  # what ham keeps of it can be saved and shown


def check_answer(datagrams: list[bytes]) -> None:
    """libham's Connection.request against a server that answers with these datagrams and
    then hangs up: an answer, or OSError, whatever the server says."""
    from hamtools.ham.client import Connection

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        conn = Connection.__new__(Connection)
        conn.sock, conn._next_id, conn.pid = ours, 1, os.getpid()
        for data in datagrams:
            theirs.send(data)
        theirs.shutdown(socket.SHUT_WR)
        try:
            conn.request("status")
        except OSError:
            pass


@st.composite
def answers(draw) -> list[bytes]:
    """What a confused or hostile server might send back to request msg_id 1."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from([wire.REPLY, wire.ERROR, wire.MORE, wire.SEND, wire.PULSE, wire.UNBLOCK]))
        body = draw(st.binary(max_size=12) | st.builds(
            lambda status, data: struct.pack("=i", status) + data,
            st.integers(-2**31, 2**31 - 1), st.binary(max_size=20)
            | json_values.map(lambda v: cjson.dumps(v).encode())))
        try:
            out.append(wire.encode(kind, draw(st.sampled_from([1, 1, 2])), body))
        except ProtocolError:
            pass
    return out or [draw(frames())]


# ---- the daemon's request handling (hamd.ops), in-process ----------------------------------

# Values that reach execution are drawn from lists that can never run anything: command lines
# that fail to split or are blank, and pids that no process has (above the kernel's pid_max).
SAFE_LINES = ["", "   ", "'unclosed", '"unclosed', "\\"]
NO_PID = [2**22 + 7, 0, -1, -2**31, 2**63]
KEYS = ["name", "pid", "flags", "line", "hp", "hpdl", "hpdh", "path", "type", "from", "to",
        "rtype", "rclass", "rseverity", "kind", "params", "command", "settings", "state", "op",
        "value", "stop_entities"]
PARAM_KEYS = ["line", "timeout", "pid", "chid", "code", "value", "signum", "message",
              "verbosity", "prefix", "delay", "path"]
NAMES = ["e", "f", ".__global", "*", "e/c", "e/c/a", "e/c/a/x", "/e/", "e//c", "", "a" * 300, "\udcff"]
KINDS = ["restart", "execute", "waitfor", "notify_pulse", "notify_signal", "heartbeat_healthy",
         "log", "bogus"]


def _value_for(key: str):
    if key == "line":
        return st.sampled_from(SAFE_LINES)
    if key == "pid":
        return st.sampled_from(NO_PID)
    if key in ("name", "path"):
        return st.sampled_from(NAMES) | _text()
    if key == "kind":
        return st.sampled_from(KINDS)
    if key == "command":
        return st.sampled_from(["start", "stop", "restart", "x"])
    if key == "params":
        return st.dictionaries(st.sampled_from(PARAM_KEYS), st.deferred(lambda: json_values), max_size=6).map(_defuse)
    if key == "settings":
        return st.dictionaries(st.sampled_from(["restart", "max_restarts", "backoff_initial", "heartbeat",
                                                "group", "command", "argv", "uid", "strategy", "window"])
                               | _text(), json_values, max_size=4).map(_defuse)
    return json_values


def _defuse(params: dict) -> dict:
    for key in ("line", "command", "argv", "on_limit_command"):
        if key in params:
            params[key] = SAFE_LINES[hash(str(params[key])) % len(SAFE_LINES)]
    if "pid" in params:
        params["pid"] = NO_PID[hash(str(params["pid"])) % len(NO_PID)]
    return params


@st.composite
def request_args(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=6, unique=True))
    args = {key: draw(_value_for(key)) for key in keys}
    if draw(st.booleans()):
        args[draw(_text())] = draw(json_values)
    return args


requests = st.lists(st.tuples(st.sampled_from(OPS + ["bogus"]), request_args(), st.sampled_from(["user", "root"])),
                    min_size=1, max_size=8)


class _Conn:
    """A peer as hamd.server knows it (hamd.server.Conn's fields), without a socket."""

    def __init__(self, uid: int, control: bool):
        self.sock, self.pid, self.uid, self.gid, self.control = None, os.getpid(), uid, uid, control
        self.self_entities = {}


def _request_body(op: str, args: dict) -> bytes:
    if op == "heartbeat":  # the bare name, as it comes: undecodable where it is no text
        return b"heartbeat " + str(args.get("name", "")).encode("utf-8", "surrogatepass")
    return hamproto.encode_request(op, args)


def check_ops(script: list) -> None:
    """Each request, decoded as hamd.server decodes it, answered or refused with BadRequest or
    HamError (the documented refusals: an errno and a reason); then ham's status and state
    file still encode."""
    from hamtools.hamd.model import HamError

    with in_process_ham() as ham:
        peers = {"user": _Conn(4242, control=False), "root": _Conn(0, control=True)}
        for op, args, who in script:
            try:
                result = ham.requests.handle(peers[who], *hamproto.decode_request(_request_body(op, args)))
            except hamproto.BadRequest:
                continue
            except HamError as refused:
                assert refused.errno and isinstance(refused.strerror, str)
                continue
            hamproto.encode_answer(result)  # as hamd.server answers it
        cjson.loads(ham.status())
        ham.save()


# ---- sd_notify: the parser and what ham does with a notification -----------------------------

@st.composite
def notifications(draw) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=80))
    keys = ["READY", "RELOADING", "STOPPING", "STATUS", "ERRNO", "WATCHDOG", "WATCHDOG_USEC",
            "MAINPID", "BARRIER", "X"]
    lines = draw(st.lists(st.tuples(st.sampled_from(keys) | _text(max_size=5),
                                    st.sampled_from(["1", "0", "trigger", "", "-1", "1e9", "99999999999999999999"])
                                    | _text(max_size=10)), max_size=6))
    text = "\n".join(f"{k}={v}" for k, v in lines)
    return text.encode("utf-8", "surrogatepass")


def check_notify(data: bytes) -> None:
    try:
        fields = sdnotify.parse(data)
    except ValueError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items())


def check_notify_applied(data: bytes) -> None:
    """A notification from a self-attached entity's own process, as root and as a stranger:
    ham takes what is valid, drops the rest, and its status still encodes."""
    from hamtools.hamd.notify import NotifySocket

    with in_process_ham() as ham:
        ham.requests.handle(_Conn(0, control=False), "attach_self",
                            {"name": "me", "hp": 10**9, "hpdl": 1, "hpdh": 2})
        notify = NotifySocket(ham, os.path.join(ham.runtime_dir, "notify"))
        try:
            for uid in (4242, 0):
                notify.received(data, os.getpid(), uid, uid)
        finally:
            notify.close()
        cjson.loads(ham.status())


# ---- configuration files: seed 001's startup file and TOML ----------------------------------

STARTUP_VARS = ["NAME", "HEARTBEAT", "MISSED_LOW", "MISSED_HIGH", "RESTART", "MAX_RESTARTS",
                "RESTART_WINDOW", "GROUP", "SAFE_AFTER", "SAFE_ARG", "KILL_SIGNAL", "GRACE", "USER",
                "CWD", "AFTER", "FOO"]
WORDS = ["/bin/true", "./x", "../y", "'a b'", '"c\\"d"', "\\", "#", "=", "-x", "1", "0", "-1",
         "1.5", "500ms", "2h", "nan", "inf", "always", "never", "on-failure", "root", "nobody",
         "SIGABRT", "9", "/tmp", "a,b", "w", "'", '"']


@st.composite
def startup_files(draw) -> str:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.text(max_size=120))
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        words = [f"{draw(st.sampled_from(STARTUP_VARS))}={draw(st.sampled_from(WORDS) | _text(max_size=8))}"
                 for _ in range(draw(st.integers(0, 4)))]
        words += draw(st.lists(st.sampled_from(WORDS) | _text(max_size=8), max_size=3))
        tail = draw(st.sampled_from(["", "", " \\", "\r", " # c"]))
        lines.append(draw(st.sampled_from(["", "#", "  "])) + " ".join(words) + tail)
    return "\n".join(lines)


TOML_SCALARS = (st.integers(-2**64, 2**64) | st.sampled_from([10**400, 2**63]) | st.floats() | st.booleans()
                | st.sampled_from(WORDS) | _text(10, st.characters()))
TOML_KEYS = ["command", "argv", "env", "uid", "gid", "cwd", "umask", "rlimits", "nice", "sched",
             "cpus", "cgroup", "stdout", "stderr", "stop_signal", "stop_timeout", "kill_signal",
             "restart", "max_restarts", "backoff_initial", "backoff_factor", "on_limit",
             "on_limit_command", "group", "after", "ready", "heartbeat", "missed_low",
             "missed_high", "condition", "name", "type", "flags", "action", "kind", "params",
             "fail", "strategy", "window", "nofile", "policy", "priority", "x"]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return cjson.dumps(value).replace("\\u007f", "\\u007F")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{cjson.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


toml_values = st.recursive(TOML_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(TOML_KEYS), inner, max_size=4), max_leaves=10)


@st.composite
def toml_files(draw) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=120))
    out = []
    for _ in range(draw(st.integers(1, 4))):
        header = draw(st.sampled_from(["[service.a]", "[service.b]", "[[service]]", "[group.g]",
                                       "[[service.a.condition]]", "[[service.a.condition.action]]",
                                       "[[service.a.condition.action.fail]]", "[[global.condition]]",
                                       "[[global.condition.action]]", "[placeholder.p]",
                                       "[[placeholder.p.condition]]", "[other]", ""]))
        out.append(header)
        if "service" in header and draw(st.integers(0, 4)):  # past "no command", to the values
            out.append('command = "/bin/true"')
        for key, value in draw(st.dictionaries(st.sampled_from(TOML_KEYS), toml_values, max_size=5)).items():
            out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out)


def _check_config(text: str, suffix: str) -> None:
    from hamtools.hamd import config

    with tempfile.TemporaryDirectory(prefix="hamfuzz.") as where:
        path = os.path.join(where, "ham" + suffix)
        with open(path, "w", encoding="utf-8", errors="surrogatepass") as file:
            file.write(text)
        try:
            config.load([path])
        except config.ConfigError as bad:
            assert str(bad).startswith(path) and "\n" not in bad.message


def check_startup_file(text: str) -> None:
    _check_config(text, ".conf")


def check_toml_file(text: str) -> None:
    _check_config(text, ".toml")


# ---- neutrino: a channel receiving whatever a client sends ----------------------------------

_channel = []


def check_channel(datagrams: list[bytes]) -> None:
    """Raw datagrams into a real channel: MsgReceive yields well-formed messages and pulses
    (with the sender's credentials) or times out; the channel survives to serve the next."""
    from hamtools.neutrino import ChannelCreate, MsgError, MsgReceive, _PULSE_CODE_DISCONNECT

    if not _channel:
        _channel.append(ChannelCreate(0))
    chid = _channel[0]
    client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with client:
        client.connect(wire.channel_address(os.getpid(), chid))
        for data in datagrams:
            client.send(data)
        while True:
            try:
                rcvid, msg, info = MsgReceive(chid, timeout=0.002)
            except OSError as err:
                assert err.errno == errno.ETIMEDOUT
                break
            assert info.pid == os.getpid() and info.uid == os.getuid()
            if rcvid:
                assert isinstance(msg, bytes)
                MsgError(rcvid, errno.ENOSYS)
            else:
                assert msg.code != _PULSE_CODE_DISCONNECT  # flags 0: no kernel pulses


def _datagram_lists(inner):
    return st.lists(inner, min_size=1, max_size=5)


TARGETS = {
    "wire.decode_datagram": (st.tuples(frames(), st.booleans()), check_datagram),
    "wire.Decoder": (st.lists(st.binary(max_size=30) | frames(), max_size=6), check_stream),
    "wire.LongReply": (_datagram_lists(answers().map(lambda frames_: frames_[0])), check_long_reply),
    "wire.Pulse.unpack": (st.binary(max_size=20), check_pulse),
    "hamproto.decode_request": (request_bodies(), check_request),
    "ham.client answers": (answers(), check_answer),
    "hamd.ops requests": (requests, check_ops),
    "sdnotify.parse": (notifications(), check_notify),
    "hamd.notify received": (notifications(), check_notify_applied),
    "config startup file": (startup_files(), check_startup_file),
    "config TOML": (toml_files(), check_toml_file),
    "neutrino channel": (_datagram_lists(frames()), check_channel),
}
