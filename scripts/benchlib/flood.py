"""A flood from an unauthorised local user against a running ham (issue 9, item 3), while
legitimate entities beat and an administrator asks for the status: scripts/bench_flood's
figures and tests/test_ham_flood's properties.

The flooder runs as another uid (root starts it with setuid): over several connections to the
client socket it forges heartbeats and states for root's entities, sends garbage frames and
stray pulses, and sends sd_notify datagrams (WATCHDOG=1, READY=1, WATCHDOG=trigger,
MAINPID=1) to the notify socket, paced at --rate in total; it reads and drops ham's answers.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib.heartbeats import Beater, connect

FLOODER = r"""
import os, socket, sys, time
from hamtools.core import hamproto, wire
run, rate, seconds, names = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")
conns = []
for _ in range(4):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(run + "/client")
    s.setblocking(False)
    conns.append(s)
note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
note.connect(run + "/notify")
note.setblocking(False)
frames = [wire.encode(wire.SEND, 1, hamproto.encode_request("heartbeat", {"name": n})) for n in names]
frames += [wire.encode(wire.SEND, 2, hamproto.encode_request("state", {"name": n, "state": 5})) for n in names]
frames += [b"garbage, no frame", wire.encode_pulse(wire.Pulse(code=77, value=1))]
notes = [b"WATCHDOG=1", b"READY=1", b"WATCHDOG=trigger", b"MAINPID=1", b"STATUS=forged"]
tried = sent = answers = 0
start = time.monotonic()
while (now := time.monotonic()) - start < seconds:
    due = min(int((now - start) * rate) - tried, 4000)
    for _ in range(due):
        tried += 1
        try:
            if tried % 10 == 0:
                note.send(notes[tried % len(notes)])
            else:
                conns[tried % len(conns)].send(frames[tried % len(frames)])
            sent += 1
        except BlockingIOError:  # ham is behind: the kernel holds no more for it
            pass
    for s in conns:
        try:
            while s.recv(70000):
                answers += 1
        except BlockingIOError:
            pass
    if due <= 0:
        time.sleep(0.0005)
print(tried, sent, answers, time.monotonic() - start)
"""


def world_readable_tree(root: Path) -> str:
    """A copy of hamtools the flooder's uid can import (the tree may sit in root's 0700 home)."""
    top = tempfile.mkdtemp(prefix="ham-flood.")
    os.chmod(top, 0o755)
    shutil.copytree(root / "hamtools", os.path.join(top, "hamtools"), ignore=shutil.ignore_patterns("__pycache__"))
    return top


def flood(run: Path, ham_pid: int, uid: int, gid: int, python: str, lib: str, *, rate: float,
          seconds: float, beaters: int = 20, hz: float = 10.0, hpdl: int = 3, calm: float = 0.0) -> dict:
    """Flood ham on runtime dir run for seconds from uid; meanwhile beat `beaters` root
    entities at hz (MISSEDLOW after hpdl periods: a loaded machine's scheduling is no false
    miss of ham's) and time a status request every 20 ms, for `calm` seconds before the flood
    too (the same requests without it, side by side). The figures and what judges the
    properties: conditions fired during the flood, heartbeat states, log growth."""
    from hamtools.ham import ham_status
    from hamtools.ham.client import Connection
    from benchlib import cpu_seconds

    from hamtools import ham as h

    beater = Beater(hz)
    h.ham_connect(0)

    def set_up_one() -> bool:
        """Attach one entity and give it what a forged state or a missed beat would fire,
        between the beats of those attached already (a pause here would be the bench's miss).
        The conditions have no actions: HCONDKEEPONEMPTY keeps them, and their fired count."""
        if len(beater.conns) >= beaters:
            return False
        n = len(beater.conns)
        beater.add(connect(n, hz, hpdl))
        ehdl = h.ham_entity_handle(0, f"e{n:04d}", 0)
        h.ham_condition(ehdl, h.CONDHBEATMISSEDLOW, "late", h.HCONDKEEPONEMPTY)
        h.ham_condition_state(ehdl, "state", h.CONDSTATEANY, h.CONDSTATEANY, h.HCONDKEEPONEMPTY)
        return True

    while len(beater.conns) < beaters:
        beater.run(0.005, between=set_up_one)
    h.ham_disconnect(0)
    beater.run(1.0)  # settled before the flood
    before = ham_status()
    unhealthy_before = unhealthy(before)
    beater.late = 0.0  # from here on: how late the beater itself sent a beat
    names = [e["name"] for e in before["entities"] if e["type"] != "global"]
    log = run / "ham.log"
    log_before = log.stat().st_size if log.exists() else 0
    admin = Connection(prefer_control=True)
    latencies, next_probe = [], [time.monotonic()]

    def probe() -> bool:
        if time.monotonic() < next_probe[0]:
            return False
        started = time.perf_counter()
        admin.request("status")
        latencies.append(time.perf_counter() - started)
        next_probe[0] = time.monotonic() + 0.02
        return True

    beater.run(calm, between=probe)
    calm_latencies, latencies[:] = sorted(latencies), []
    cpu = cpu_seconds(ham_pid)
    flooder = subprocess.Popen([python, "-I", "-c", f"import sys; sys.path.insert(0, {lib!r})\n" + FLOODER,
                                str(run), str(rate), str(seconds), ",".join(names)],
                               user=uid, group=gid, extra_groups=[], stdout=subprocess.PIPE, text=True, cwd="/")
    started = time.monotonic()
    beater.run(seconds + 0.5, between=probe)
    out, _ = flooder.communicate(timeout=30)
    elapsed = time.monotonic() - started
    used = cpu_seconds(ham_pid) - cpu
    tried, sent, answers, flood_s = out.split()
    beater.run(1.0)  # the beats go on after the flood too
    admin.close()
    status = ham_status()
    for conn in beater.conns:
        conn.close()
    ordered = sorted(latencies)
    return {
        "tried": int(tried) / float(flood_s), "sent": int(sent) / float(flood_s), "answers": int(answers),
        "seconds": float(flood_s), "status_ms": [x * 1e3 for x in ordered],
        "calm_status_ms": [x * 1e3 for x in calm_latencies],
        "over_10ms": sum(x > 0.010 for x in ordered), "cpu": used / elapsed,
        "fired": fired(status) - fired(before),
        "unhealthy": unhealthy(status), "unhealthy_before": unhealthy_before, "beater_late_ms": beater.late * 1e3,
        "forged": [e["name"] for e in status["entities"] if e["notify"] or e["state"]],
        "log_growth": (log.stat().st_size if log.exists() else 0) - log_before,
        "ham_pid": status["ham_pid"],
    }


def unhealthy(status: dict) -> list[str]:
    return [e["name"] for e in status["entities"] if e["heartbeat_state"] not in (None, "healthy")]


def fired(status: dict) -> int:
    return sum(c["fired"] for e in status["entities"] for c in e["conditions"])


def _spread(ms: list[float]) -> str:
    return f"median {ms[len(ms) // 2]:.2f} ms, p99 {ms[int(len(ms) * 0.99)]:.2f} ms, max {ms[-1]:.2f} ms"


def summary(got: dict) -> str:
    ms, calm = got["status_ms"], got["calm_status_ms"]
    return (f"flood: {got['tried']:,.0f}/s offered by an unauthorised uid for {got['seconds']:.1f} s, "
            f"{got['sent']:,.0f}/s taken by the kernel for ham; status answered in {_spread(ms)} "
            f"({got['over_10ms']} of {len(ms)} over 10 ms)"
            + (f"; before the flood, the same: {_spread(calm)} ({sum(x > 10 for x in calm)} of {len(calm)} "
               f"over 10 ms)" if calm else "")
            + f"; conditions fired {got['fired']}, "
            f"unhealthy {len(got['unhealthy'])} (before the flood {len(got['unhealthy_before'])}), "
            f"forged states {len(got['forged'])}; the beater's latest beat {got['beater_late_ms']:.0f} ms late; "
            f"log grew {got['log_growth']:,} bytes; ham at {got['cpu'] * 100:.0f} % of a core")
