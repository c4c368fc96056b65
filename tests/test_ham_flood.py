"""A flood from an unauthorised local user (issue 9, item 3) against a real ham, while root's
entities beat and an administrator asks for the status: ham stays up and answering, no
condition fires, nothing is forged, and its log stays bounded. The timings (status within
10 ms at 100,000 messages/s) are scripts/bench_flood's figures, never asserted here."""

import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_ham_security import PYTHON, open_ham, second_user  # noqa: F401 (fixtures)

sys.path.insert(0, str(ROOT / "scripts"))
from benchlib.flood import flood  # noqa: E402

FLOOD_SECONDS = 3
LOG_BOUND = 16 * 1024  # bytes the log may grow by: refusals are a few lines per kind and uid per 10 s


def test_a_flood_from_an_unauthorised_user_changes_nothing(open_ham, second_user):  # noqa: F811
    got = flood(Path(open_ham.dir), open_ham.proc.pid, second_user.pw_uid, second_user.pw_gid, PYTHON,
                open_ham.lib, rate=20_000, seconds=FLOOD_SECONDS, beaters=10, hpdl=5)
    assert got["tried"] > 1000 and got["answers"] > 0  # it did flood, and ham answered it
    assert got["ham_pid"] == open_ham.proc.pid and open_ham.proc.poll() is None
    assert len(got["status_ms"]) > 10  # the administrator was answered throughout
    assert got["fired"] == 0 and got["unhealthy"] == [] and got["forged"] == []
    assert 0 < got["log_growth"] < LOG_BOUND
    log = open_ham.read_log()
    assert f"uid {second_user.pw_uid}) on the client socket: not permitted" in log
    assert f"refused notifications of uid {second_user.pw_uid}" in log or "refused: no entity of its own" in log
