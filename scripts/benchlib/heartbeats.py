"""Self-attached entities beating from one process (scripts/bench_heartbeat's load, and the
legitimate beats that scripts/bench_flood keeps going under a flood): ham's client protocol
spoken directly, one connection per entity, QNX's heartbeat pulse on it."""

import os
import socket
import time
from pathlib import Path

from hamtools.core import hamproto, wire

BEAT = wire.encode_pulse(wire.Pulse(code=hamproto.HBEAT_CODE, value=0))


def connect(n: int, rate: float, hpdl: int = 1) -> socket.socket:
    """A self-attached entity e<n> on a connection of its own (period 1/rate, hpdl, hpdh 3 hpdl)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(os.path.join(os.environ["HAM_RUNTIME_DIR"], "client"))
    reattach(sock, n, rate, hpdl)
    sock.setblocking(False)
    return sock


def reattach(sock: socket.socket, n: int, rate: float, hpdl: int = 1) -> None:
    """attach_self, also again on the same connection (ham then re-arms the heartbeat)."""
    body = hamproto.encode_request("attach_self", {"name": f"e{n:04d}", "hp": int(1e9 / rate),
                                                   "hpdl": hpdl, "hpdh": 3 * hpdl, "flags": 0})
    blocking = sock.getblocking()
    sock.setblocking(True)
    sock.send(wire.encode(wire.SEND, 1, body))
    while (frame := wire.decode_datagram(sock.recv(wire.MAX_FRAME))).kind != wire.REPLY:
        pass
    status, reply = wire.decode_status(frame)
    sock.setblocking(blocking)
    if status != 0:
        raise SystemExit(f"bench: attach_self e{n}: {reply.decode()}")


class Beater:
    """Beats every attached connection once per period, each on its own schedule (kept from
    the attaching through the measuring: a gap between phases would be a miss of the bench)."""

    def __init__(self, rate: float):
        self.period = 1.0 / rate
        self.conns: list[socket.socket] = []
        self.due: list[float] = []
        self.sent = 0
        self.late = 0.0

    def add(self, sock: socket.socket) -> None:
        self.conns.append(sock)
        self.due.append(time.monotonic() + self.period)

    def run(self, seconds: float, between=None) -> None:
        """Beat for seconds; between() is called whenever nothing is due (it must be short)."""
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end:
            idle = True
            for n, due in enumerate(self.due):
                if due <= now:
                    self.late = max(self.late, now - due)
                    self.sent += beat(self.conns[n])
                    self.due[n] = due + self.period
                    idle = False
            if idle and not (between and between()):
                time.sleep(0.0005)


def attach(count: int, rate: float, run: Path) -> Beater:
    """Attach count entities while beating for those attached, then two seconds to settle;
    any that missed while the others were being attached is re-armed (attach_self again)."""
    beater = Beater(rate)

    def attach_one() -> bool:
        if len(beater.conns) >= count:
            return False
        beater.add(connect(len(beater.conns), rate))
        return True

    while len(beater.conns) < count:
        beater.run(0.01, between=attach_one)
    beater.run(2.0)
    log = (run / "ham.log").read_text()
    for n in {int(line.split("Entity e", 1)[1][:4]) for line in log.splitlines() if "missed heartbeat" in line}:
        reattach(beater.conns[n], n, rate)
    return beater


def beat(sock: socket.socket) -> bool:
    try:
        sock.send(BEAT)
        return True
    except BlockingIOError:
        return False  # ham's queue for this connection is full: it is behind


def status() -> dict:
    from hamtools.ham import ham_status

    return ham_status()


def beats_taken() -> int:
    return sum(e.get("beats", 0) for e in status()["entities"])


def missed(run: Path) -> int:
    """MISSEDLOW as ham logged it (these entities have no conditions to journal)."""
    try:
        return (run / "ham.log").read_text().count("missed heartbeat: severity low")
    except FileNotFoundError:
        return 0
