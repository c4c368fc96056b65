"""ham's request protocol at both ends, against what a confused or hostile peer sends (each
case found by the fuzzer, tests/fuzzing.py)."""

import errno
import socket

import pytest

from hamtools.core import hamproto, wire
from hamtools.ham.client import Connection


@pytest.mark.parametrize("body", [
    b'entity {"name": "\\ud800"}',  # JSON, but no text: check_name's encode() failed deep in ham
    b'state {"name": "x\\udfff", "state": 1}',
    b'attach {"line": ["\\udc80"]}',
])
def test_a_lone_surrogate_is_a_bad_request(body):
    with pytest.raises(hamproto.BadRequest, match="lone surrogate"):
        hamproto.decode_request(body)


def test_escaped_surrogate_pairs_are_text():
    assert hamproto.decode_request(b'entity {"name": "\\ud83d\\ude00"}') == ("entity", {"name": "\U0001F600"})


def test_deep_nesting_with_escapes_is_a_bad_request():
    with pytest.raises(hamproto.BadRequest):
        hamproto.decode_request(b'status {"a": ' + b"[" * 900 + b"]" * 900 + b', "b": "\\u0041"}')


def test_an_answer_that_is_not_json_is_ebadmsg():
    with pytest.raises(OSError) as raised:
        hamproto.decode_answer(0, b"{not json")
    assert raised.value.errno == errno.EBADMSG


@pytest.mark.parametrize("answer", [
    wire.encode(wire.SEND, 1),  # no answer at all: a struct.error before
    wire.encode_reply(1, 0, b"\xff"),  # not JSON: a ValueError before
    wire.encode(wire.MORE, 1, b"x") + b"",
])
def test_libham_turns_any_bad_answer_into_oserror(answer):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        conn = Connection.__new__(Connection)  # a connection to this fake server, not to ham
        conn.sock, conn._next_id = ours, 1
        theirs.send(answer)
        theirs.shutdown(socket.SHUT_WR)
        with pytest.raises(OSError) as raised:
            conn.request("status")
        assert raised.value.errno in (errno.EBADMSG, errno.EBADF)
