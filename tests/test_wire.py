"""The frame and pulse wire format: exact bytes, byte-by-byte streams, bad input."""

import errno
import random
import struct

import pytest

from hamtools.core import wire
from hamtools.core.wire import Decoder, Frame, ProtocolError, Pulse


def test_pulse_is_qnx_32bit_struct_pulse():
    pulse = Pulse(code=-35, value=7, scoid=0x40000001)
    data = pulse.pack()
    assert len(data) == 16
    # uint16 type, uint16 subtype, int8 code, 3 zero pad bytes, int32 value, int32 scoid
    assert data == struct.pack("=HHb3xii", 0, 0, -35, 7, 0x40000001)
    assert data[4:8] == bytes([0xDD, 0, 0, 0])
    assert Pulse.unpack(data) == pulse


@pytest.mark.parametrize("size", [0, 15, 17])
def test_pulse_of_wrong_size_is_rejected(size):
    with pytest.raises(ProtocolError):
        Pulse.unpack(bytes(size))


def test_header_layout():
    data = wire.encode(wire.SEND, 9, b"abc")
    assert data == struct.pack("=HBBiI", 0x4E51, 1, wire.SEND, 9, 3) + b"abc"
    assert wire.HEADER.size == 12


def test_to_int32_wraps_like_c():
    assert wire.to_int32(2**31) == -(2**31)
    assert wire.to_int32(-1) == -1
    assert wire.to_int32(2**32 + 5) == 5


FRAMES = [
    wire.encode(wire.SEND, 1, b"hello"),
    wire.encode_reply(1, 42, b"world"),
    wire.encode_error(2, errno.EINTR),
    wire.encode_pulse(Pulse(code=5, value=-1)),
    wire.encode(wire.UNBLOCK, 3),
    wire.encode(wire.SEND, 4, b"x" * wire.MAX_BODY),
]


@pytest.mark.parametrize("data", FRAMES, ids=range(len(FRAMES)))
def test_datagram_round_trip(data):
    frame = wire.decode_datagram(data)
    assert wire.encode(frame.kind, frame.msg_id, frame.body) == data


def test_reply_and_error_status():
    assert wire.decode_status(wire.decode_datagram(wire.encode_reply(1, -7, b"z"))) == (-7, b"z")
    frame = wire.decode_datagram(wire.encode_error(1, errno.ESRCH))
    assert frame.kind == wire.ERROR and wire.decode_status(frame) == (errno.ESRCH, b"")


def test_stream_decoder_fed_byte_by_byte():
    stream = b"".join(FRAMES)
    decoder = Decoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i:i + 1])
    assert [wire.encode(f.kind, f.msg_id, f.body) for f in frames] == FRAMES
    assert decoder.pending == 0


def test_stream_decoder_in_random_chunks():
    rng = random.Random(7)
    stream = b"".join(FRAMES * 3)
    decoder, frames, pos = Decoder(), [], 0
    while pos < len(stream):
        step = rng.randint(1, 5000)
        frames += decoder.feed(stream[pos:pos + step])
        pos += step
    assert len(frames) == len(FRAMES) * 3


@pytest.mark.parametrize("cut", [1, 11, 12, 13, len(FRAMES[0]) - 1])
def test_truncated_stream_stays_pending(cut):
    decoder = Decoder()
    assert decoder.feed(FRAMES[0][:cut]) == []
    assert decoder.pending == cut


@pytest.mark.parametrize("cut", [0, 1, 11, 13, len(FRAMES[0]) - 1])
def test_truncated_datagram_is_bad_message(cut):
    with pytest.raises(ProtocolError) as bad:
        wire.decode_datagram(FRAMES[0][:cut])
    assert bad.value.errno == errno.EBADMSG


def test_datagram_with_trailing_bytes_is_bad():
    with pytest.raises(ProtocolError):
        wire.decode_datagram(FRAMES[0] + b"!")


def test_oversized_body_refused_on_encode_and_decode():
    with pytest.raises(ProtocolError) as bad:
        wire.encode(wire.SEND, 1, b"x" * (wire.MAX_BODY + 1))
    assert bad.value.errno == errno.EMSGSIZE
    header = wire.HEADER.pack(wire.MAGIC, wire.VERSION, wire.SEND, 77, wire.MAX_BODY + 1)
    for decode in (wire.decode_datagram, Decoder().feed):
        with pytest.raises(ProtocolError) as bad:
            decode(header)
        assert (bad.value.errno, bad.value.msg_id) == (errno.EMSGSIZE, 77)


def test_kernel_truncation_flag_is_emsgsize():
    with pytest.raises(ProtocolError) as bad:
        wire.decode_datagram(wire.encode(wire.SEND, 5, b"abc"), truncated=True)
    assert (bad.value.errno, bad.value.msg_id) == (errno.EMSGSIZE, 5)


@pytest.mark.parametrize("header", [
    wire.HEADER.pack(0x1234, 1, 1, 1, 0),      # bad magic
    wire.HEADER.pack(wire.MAGIC, 9, 1, 1, 0),  # unknown version
    wire.HEADER.pack(wire.MAGIC, 1, 99, 1, 0),  # unknown kind
    wire.HEADER.pack(wire.MAGIC, 1, wire.PULSE, 0, 3) + b"abc",  # pulse body not 16 bytes
    wire.HEADER.pack(wire.MAGIC, 1, wire.ERROR, 0, 0),  # error without errno
    wire.HEADER.pack(wire.MAGIC, 1, wire.REPLY, 0, 2) + b"ab",  # reply without status
    wire.HEADER.pack(wire.MAGIC, 1, wire.UNBLOCK, 0, 1) + b"a",  # unblock with a body
])
def test_malformed_frames(header):
    with pytest.raises(ProtocolError):
        wire.decode_datagram(header)
    with pytest.raises(ProtocolError):
        Decoder().feed(header)


def test_random_garbage_only_ever_raises_protocol_error():
    rng = random.Random(1)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        if rng.random() < 0.5:  # a valid header start makes the deeper checks run
            data = wire.HEADER.pack(wire.MAGIC, 1, rng.randrange(7), 0, len(data)) + data
        for decode in (wire.decode_datagram, Decoder().feed):
            try:
                decode(data)
            except ProtocolError:
                pass


def test_frame_equality_and_repr():
    assert Frame(wire.SEND, 1, b"a") == Frame(wire.SEND, 1, b"a") != Frame(wire.SEND, 2, b"a")
    assert repr(Frame(wire.PULSE, 0)) == "Frame(PULSE, 0, b'')"


@pytest.mark.parametrize("kind", [wire.SEND, wire.PULSE, wire.UNBLOCK, wire.MORE])
def test_only_reply_and_error_frames_are_answers(kind):
    """Found by the fuzzer: a SEND frame with a short body as "the answer" was a struct.error
    in libham and in heartbeat's one-shot, not the ProtocolError they report."""
    body = wire.Pulse(code=1, value=0).pack() if kind == wire.PULSE else b""
    frame = wire.decode_datagram(wire.encode(kind, 1, body))
    with pytest.raises(ProtocolError):
        wire.decode_status(frame)
    if kind != wire.MORE:  # a leading part of a long answer, for LongReply
        with pytest.raises(ProtocolError):
            wire.LongReply(1, 100).feed(frame)
