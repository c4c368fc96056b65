"""Requests and answers on ham's sockets (control and client), with no I/O: shared by
libham (hamtools.ham) and the daemon (hamtools.hamd).

Each request is one SEND frame (hamtools.core.wire) whose body is `OP SP ARGS`: ARGS is a JSON
object, except for `heartbeat NAME`, whose argument is the bare name (the shell one-shot stays
cheap). ham answers with a REPLY frame: status 0 and a JSON body, or status -errno and a
one-line reason. Heartbeats on a self-attached connection are PULSE frames with code
HBEAT_CODE (no answer), as QNX's library sends _HAMHBEATPULSECODE.
"""

import errno
from hamtools.core import cjson

HBEAT_CODE = 2  # _PULSE_CODE_MINAVAIL + 2, QNX's _HAMHBEATPULSECODE
MAX_NAME = 255


class BadRequest(ValueError):
    pass


def encode_request(op: str, args: dict | None = None) -> bytes:
    if op == "heartbeat":
        return b"heartbeat " + str((args or {}).get("name", "")).encode()
    return op.encode() + b" " + cjson.dumps(args or {}).encode()


def decode_request(body: bytes) -> tuple[str, dict]:
    op, _, rest = bytes(body).partition(b" ")
    try:
        op_text = op.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest("request name is not ASCII") from None
    if not op_text.isidentifier():
        raise BadRequest(f"bad request name {op_text[:40]!r}")
    if op_text == "heartbeat":
        try:
            return op_text, {"name": rest.decode()}
        except UnicodeDecodeError:
            raise BadRequest("entity name is not UTF-8") from None
    try:
        args = cjson.loads(rest or b"{}")
    except (ValueError, RecursionError):
        raise BadRequest("arguments are not JSON") from None
    if not isinstance(args, dict):
        raise BadRequest("arguments are not a JSON object")
    try:
        if b"\\u" in rest and _holds_lone_surrogate(args):  # "\ud800" is JSON, but not text
            raise BadRequest("arguments hold a lone surrogate (\\ud800-\\udfff), not Unicode text")
    except RecursionError:
        raise BadRequest("arguments are nested too deep") from None
    return op_text, args


def _holds_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        try:
            value.encode()
            return False
        except UnicodeEncodeError:
            return True
    if isinstance(value, dict):
        return any(_holds_lone_surrogate(k) or _holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_lone_surrogate(v) for v in value)
    return False


class Encoded(str):
    """An answer that is JSON text already (ham encodes its big ones piece by piece)."""


def encode_answer(data=None) -> tuple[int, bytes]:
    if isinstance(data, Encoded):
        return 0, data.encode()
    return 0, b"" if data is None else cjson.dumps(data).encode()


def encode_failure(err: int, reason: str) -> tuple[int, bytes]:
    return -err, reason.encode()[:1000]


def decode_answer(status: int, body: bytes):
    """The answer's data, or raise OSError(errno, reason); an answer that is not JSON is
    OSError(EBADMSG)."""
    if status < 0:
        err = -status
        raise OSError(err, body.decode(errors="replace") or errno.errorcode.get(err, str(err)))
    try:
        return cjson.loads(body) if body else None
    except (ValueError, RecursionError):
        raise OSError(errno.EBADMSG, "ham's answer is not JSON") from None
