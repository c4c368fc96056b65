"""The short fuzz run of CI (issue 9, item 2): every decoder of tests/fuzzing.py against a few
hundred generated inputs, deterministic (derandomized) so that a CI failure replays; each
must answer or raise its documented error, and no example may hang. The long, random run is
`scripts/fuzz --minutes 30`."""

import pytest

from tests.fuzzing import TARGETS, fuzz_test

# Examples per target in CI: the slow targets (a Ham per example, files, sockets) get fewer.
EXAMPLES = {"hamd.ops requests": 150, "hamd.notify received": 100, "config startup file": 200,
            "config TOML": 200, "neutrino channel": 150, "ham.client answers": 200,
            "wire.LongReply": 200}


@pytest.mark.parametrize("name", list(TARGETS))
def test_decoder_raises_only_its_documented_error(name):
    fuzz_test(name, max_examples=EXAMPLES.get(name, 400), derandomize=True, database=None)()
