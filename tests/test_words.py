"""core.words against shlex.split (POSIX mode) as the oracle."""

import random
import shlex

import pytest

from hamtools.core import words

CASES = [
    "", "   ", "/bin/sleep 10", "  a   b  ", "'path with space' arg1 arg2 \"arg3 with space\"",
    "\\'path\\ with\\ space\\'", "a'b'c", 'a"b"c', r'"a\"b"', r'"a\$b\\c\x"', r"a\ b", r"'a\b'",
    "sh -c 'sleep 2; kill -SEGV $$'", 'x "" y', "x '' y", "tab\tsep\nnewline", r'"line\
cont"', "a\\\nb",
]


@pytest.mark.parametrize("line", CASES)
def test_same_as_shlex(line):
    assert words.split(line) == shlex.split(line, posix=True)


@pytest.mark.parametrize("line", ["'open", '"open', "trailing\\", '"esc\\'])
def test_unbalanced_is_an_error_like_shlex(line):
    with pytest.raises(ValueError):
        shlex.split(line)
    with pytest.raises(ValueError):
        words.split(line)


def test_random_lines_agree_with_shlex():
    rng = random.Random(3)
    alphabet = "ab $\\'\"\t\r\n"
    for _ in range(20000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
        try:
            expected = shlex.split(line, posix=True, comments=False)
        except ValueError:
            with pytest.raises(ValueError):
                words.split(line)
            continue
        assert words.split(line) == expected, line
