"""hamtools.core.cjson: json.dumps/json.loads semantics through _json alone."""

import json
import subprocess
import sys

import pytest

from hamtools.core import cjson
from tests.conftest import ROOT

SAMPLES = [
    {"a": [1, 2.5, None, True, False, "é\n\u2028", -0.0, 1e300], "b": {}, "": []},
    [], "text", 0, -7, 3.25, 10 ** 30, {"nested": [[[{"x": "y"}]]]},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_same_text_and_values_as_json(value):
    text = cjson.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert cjson.loads(text) == json.loads(text)
    assert cjson.loads(text.encode()) == json.loads(text)
    assert cjson.loads(f" \n\t{text}\r ") == json.loads(text)


@pytest.mark.parametrize("head, items", [({}, []), ({"a": 1}, []), ({}, [{"x": [1]}, 2]),
                                         ({"a": {"b": None}, "c": "d"}, ["e", {"f": 1.5}, [], {}])])
def test_dumps_with_list_is_dumps_of_the_whole(head, items):
    expected = json.dumps({**head, "list": items}, separators=(",", ":"))
    assert cjson.dumps_with_list(head, "list", iter(items)) == expected


@pytest.mark.parametrize("bad", ["", " ", "{", "[1,]", "1 2", "nul", '{"a":1}x', "{not json",
                                 '"unterminated', '{"a" 1}', '["\x01"]', b"\xff\xfe"])
def test_malformed_text_is_a_value_error(bad):
    with pytest.raises(ValueError):
        cjson.loads(bad)


def test_nesting_past_the_recursion_limit_is_a_recursion_error():
    with pytest.raises(RecursionError):
        cjson.loads("[" * 100000)


def test_unencodable_objects_are_type_errors_and_leave_no_trace():
    with pytest.raises(TypeError):
        cjson.dumps({"x": object()})
    shared = [1]
    assert cjson.dumps([shared, shared]) == "[[1],[1]]"  # no stale circular-reference marks


def test_neither_json_nor_re_is_imported_even_by_errors():
    code = ("before = set(sys.modules); from hamtools.core import cjson\n"
            "cjson.loads(cjson.dumps({'a': [1, 'b']}))\n"
            "try:\n    cjson.loads('{oops')\nexcept ValueError:\n    pass\n"
            "print(sorted(m for m in ('json', 're', 'enum') if m in set(sys.modules) - before))")
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
