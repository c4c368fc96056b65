"""JSON through CPython's C accelerator (`_json`) alone, for the daemon's hot, resident paths.

The `json` package imports `re` (and `re` imports `enum`): about 1 MB of resident size in a
daemon whose footprint is budgeted against a bare pidfd loop. Encoding and decoding JSON never
needs them: `_json`'s scanner matches numbers itself. It reports a syntax error through
json.decoder.JSONDecodeError, which it looks up in sys.modules only: where nothing imported
json, the error surfaces as SystemError, which loads() turns into ValueError (without the
position).

Same output as `json.dumps(obj, separators=(",", ":"))`; `loads` accepts what `json.loads`
accepts from str or UTF-8 bytes and raises ValueError (RecursionError when nested too deep).
"""

import _json

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _unencodable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# markers None: no circular-reference check (ham never builds cycles; a shared markers dict
# would keep stale ids after an error).
_encode = _json.make_encoder(None, _unencodable, _json.encode_basestring_ascii, None, ":", ",",
                             False, False, True)


class _Context:
    """The attributes `_json.make_scanner` reads from json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_Context())


def dumps(obj) -> str:
    return "".join(_encode(obj, 0))


def dumps_with_list(obj: dict, key: str, items) -> str:
    """dumps({**obj, key: list(items)}), each item encoded on its own: the encoder's chunks
    and the items' dicts then peak at one item's worth, not the whole list's, and a peak stays
    in the daemon's heap (its resident size is budgeted)."""
    joined = ",".join(dumps(item) for item in items)
    head = dumps(obj)
    return f'{head[:-1]}{"," if obj else ""}{dumps(key)}:[{joined}]}}'


def scan(text: str, start: int):
    """(the JSON value that starts at text[start], the index after it); ValueError if none."""
    try:
        return _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"expecting a value at character {stop.value}") from None
    except (SystemError, RecursionError):
        raise ValueError("malformed JSON") from None


def loads(text: str | bytes | bytearray | memoryview):
    if not isinstance(text, str):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as bad:
            raise ValueError(f"not UTF-8: {bad.reason}") from None
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        obj, end = _scan(text, start)
    except StopIteration as stop:
        raise ValueError(f"expecting a value at character {stop.value}") from None
    except SystemError:  # a syntax error, json.decoder not loaded (see above)
        raise ValueError("malformed JSON") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data at character {end}")
    return obj
