"""The frame format of hamtools' sockets, with no I/O (in the manner of h11): frames and
QNX's `_pulse`. Neutrino channels speak it, and so do ham's sockets.

It imports only `errno` and `struct`: the heartbeat one-shot path uses it, and that path is
budgeted at twice a bare interpreter start (no dataclasses, enum or socket module here).

One frame is a 12-byte header and a body:

    uint16 magic 0x4E51 ("QN"), uint8 version, uint8 kind, int32 msg_id, uint32 body length

in native byte order (both ends are on one machine). Over a SOCK_SEQPACKET channel each
datagram is exactly one frame (`decode_datagram`); `Decoder` also reads frames from a byte
stream fed in pieces of any size, so the format works over stream sockets too.

A pulse's body is QNX's 16-byte 32-bit `struct _pulse`:
    uint16 type, uint16 subtype, int8 code, 3 pad bytes, int32 value, int32 scoid
"""

import errno
import struct

MAGIC = 0x4E51
VERSION = 1
HEADER = struct.Struct("=HBBiI")
PULSE_STRUCT = struct.Struct("=HHb3xii")
STATUS = struct.Struct("=i")
MAX_BODY = 64 * 1024  # the largest message or reply; bigger ones get EMSGSIZE
MAX_FRAME = HEADER.size + MAX_BODY


# Frame kinds
SEND = 1  # client -> server: a message; the client stays blocked until REPLY or ERROR
REPLY = 2  # server -> client: int32 status, then the reply bytes
ERROR = 3  # server -> client: int32 errno (MsgError)
PULSE = 4  # client -> server: struct _pulse; never answered
UNBLOCK = 5  # client -> server: a signal hit the client blocked on msg_id; it wants out
MORE = 6  # server -> client: a leading part of a reply too long for one frame; the REPLY that
#           follows (same msg_id) ends it and carries the status (ham's answers, not neutrino)
KIND_NAMES = {SEND: "SEND", REPLY: "REPLY", ERROR: "ERROR", PULSE: "PULSE", UNBLOCK: "UNBLOCK",
              MORE: "MORE"}


class ProtocolError(ValueError):
    """A frame that is not well formed; `errno` is what the sender is told (EBADMSG/EMSGSIZE)."""

    def __init__(self, message: str, err: int = errno.EBADMSG, msg_id: int = 0):
        super().__init__(message)
        self.errno = err
        self.msg_id = msg_id  # when the header was readable, the frame it belonged to


class Frame:
    __slots__ = ("kind", "msg_id", "body")

    def __init__(self, kind: int, msg_id: int, body: bytes = b""):
        self.kind = kind
        self.msg_id = msg_id
        self.body = body

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and (self.kind, self.msg_id, self.body) == (
            other.kind, other.msg_id, other.body)

    def __repr__(self) -> str:
        return f"Frame({KIND_NAMES.get(self.kind, self.kind)}, {self.msg_id}, {self.body!r})"


class Pulse:
    """A received (or to-be-sent) pulse; pid/uid/gid name the sender (SO_PEERCRED)."""

    __slots__ = ("code", "value", "scoid", "type", "subtype", "pid", "uid", "gid")

    def __init__(self, code: int, value: int, scoid: int = 0, type: int = 0, subtype: int = 0,
                 pid: int = 0, uid: int = 0, gid: int = 0):
        self.code, self.value, self.scoid = code, value, scoid
        self.type, self.subtype = type, subtype
        self.pid, self.uid, self.gid = pid, uid, gid

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pulse) and self._fields() == other._fields()

    def __repr__(self) -> str:
        return "Pulse(" + ", ".join(f"{n}={getattr(self, n)}" for n in self.__slots__) + ")"

    def pack(self) -> bytes:
        return PULSE_STRUCT.pack(self.type, self.subtype, self.code, self.value, self.scoid)

    @classmethod
    def unpack(cls, data: bytes) -> "Pulse":
        if len(data) != PULSE_STRUCT.size:
            raise ProtocolError(f"a pulse is {PULSE_STRUCT.size} bytes, not {len(data)}")
        ptype, subtype, code, value, scoid = PULSE_STRUCT.unpack(data)
        return cls(code=code, value=value, scoid=scoid, type=ptype, subtype=subtype)


def channel_address(pid: int, chid: int) -> str:
    """The abstract AF_UNIX name of neutrino channel chid of process pid (SPEC §2)."""
    return f"\0hamtools/chan/{pid}/{chid}"


def to_int32(value: int) -> int:
    """Wrap like C's int: QNX's sigval is 32 bits wide."""
    return (value + 2**31) % 2**32 - 2**31


def encode(kind: int, msg_id: int, body: bytes = b"") -> bytes:
    if len(body) > MAX_BODY:
        raise ProtocolError(f"{len(body)} bytes is over the {MAX_BODY}-byte limit", errno.EMSGSIZE)
    return HEADER.pack(MAGIC, VERSION, kind, to_int32(msg_id), len(body)) + body


def encode_reply(msg_id: int, status: int, data: bytes = b"") -> bytes:
    return encode(REPLY, msg_id, STATUS.pack(to_int32(status)) + bytes(data))


def encode_long_reply(msg_id: int, status: int, data: bytes) -> list[bytes]:
    """A reply of any length as frames: MORE pieces, then the REPLY with the status."""
    room = MAX_BODY - STATUS.size
    cuts = range(0, max(len(data) - room, 0), MAX_BODY)
    frames = [encode(MORE, msg_id, data[at:at + MAX_BODY]) for at in cuts]
    rest = data[len(cuts) * MAX_BODY:] if cuts else data
    return frames + [encode_reply(msg_id, status, rest)]


class LongReply:
    """Reassembles what encode_long_reply cut: feed() each frame of msg_id; it returns the
    final REPLY or ERROR frame (with the whole body) or None while MORE is coming; any other
    kind of frame is a ProtocolError (no answer is made of it)."""

    def __init__(self, msg_id: int, limit: int):
        self.msg_id = msg_id
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, frame: Frame) -> "Frame | None":
        if frame.kind == MORE:
            self._size += len(frame.body)
            if self._size > self.limit:
                raise ProtocolError(f"reply over {self.limit} bytes", errno.EMSGSIZE, frame.msg_id)
            self._parts.append(frame.body)
            return None
        if frame.kind not in (REPLY, ERROR):
            raise ProtocolError(f"a {KIND_NAMES[frame.kind]} frame in an answer", msg_id=frame.msg_id)
        if frame.kind == REPLY and self._parts:
            status = frame.body[:STATUS.size]
            return Frame(REPLY, frame.msg_id, status + b"".join(self._parts) + frame.body[STATUS.size:])
        return frame


def encode_error(msg_id: int, err: int) -> bytes:
    return encode(ERROR, msg_id, STATUS.pack(err))


def encode_pulse(pulse: Pulse) -> bytes:
    return encode(PULSE, 0, pulse.pack())


def decode_status(frame: Frame) -> tuple[int, bytes]:
    """(status, data) of a REPLY frame, or (errno, b"") of an ERROR frame; any other frame
    is no answer: ProtocolError."""
    if frame.kind not in (REPLY, ERROR):
        raise ProtocolError(f"a {KIND_NAMES[frame.kind]} frame is no answer", msg_id=frame.msg_id)
    return STATUS.unpack_from(frame.body)[0], frame.body[STATUS.size:]


def _parse_header(data: bytes) -> tuple[int, int, int]:
    magic, version, kind, msg_id, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:04x}")
    if version != VERSION:
        raise ProtocolError(f"unsupported version {version}", msg_id=msg_id)
    if length > MAX_BODY:
        raise ProtocolError(f"{length}-byte body is over the {MAX_BODY}-byte limit",
                            errno.EMSGSIZE, msg_id)
    if kind not in KIND_NAMES:
        raise ProtocolError(f"unknown frame kind {kind}", msg_id=msg_id)
    return kind, msg_id, length


def _check_body(kind: int, msg_id: int, body: bytes) -> None:
    size = len(body)
    bad = (
        (kind == PULSE and size != PULSE_STRUCT.size)
        or (kind == ERROR and size != STATUS.size)
        or (kind == REPLY and size < STATUS.size)
        or (kind == UNBLOCK and size != 0)
    )
    if bad:
        raise ProtocolError(f"{KIND_NAMES[kind]} frame with a {size}-byte body", msg_id=msg_id)


def decode_datagram(data: bytes, truncated: bool = False) -> Frame:
    """The one frame in a SEQPACKET datagram; `truncated` when the kernel cut it (MSG_TRUNC)."""
    if len(data) < HEADER.size:
        raise ProtocolError(f"{len(data)}-byte datagram is shorter than a frame header")
    kind, msg_id, length = _parse_header(data)
    if truncated:
        raise ProtocolError("datagram over the size limit", errno.EMSGSIZE, msg_id)
    if len(data) != HEADER.size + length:
        raise ProtocolError(f"header says {length} body bytes, datagram has "
                            f"{len(data) - HEADER.size}", msg_id=msg_id)
    body = bytes(data[HEADER.size:])
    _check_body(kind, msg_id, body)
    return Frame(kind, msg_id, body)


class Decoder:
    """Frames from a byte stream fed in pieces of any size.

    After a ProtocolError the stream cannot be resynchronised: the caller drops the peer.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER.size:
            kind, msg_id, length = _parse_header(self._buffer)
            end = HEADER.size + length
            if len(self._buffer) < end:
                break
            body = bytes(self._buffer[HEADER.size:end])
            del self._buffer[:end]
            _check_body(kind, msg_id, body)
            frames.append(Frame(kind, msg_id, body))
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still waiting for the rest (nonzero at EOF = truncated)."""
        return len(self._buffer)
