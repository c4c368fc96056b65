#!/usr/bin/env python3
"""The demo board (scripts/demo): set up a running ham through the Python API.

- steady:  a long-running service, restarted if it ever dies;
- flaky:   crashes (SIGSEGV) two seconds after each start, and is restarted each time;
- worker:  starts on its own and self-attaches; beats every 0.2 s but stalls for 1.2 s
           now and then: ham sees the missed heartbeats (MISSEDLOW, then MISSEDHIGH), logs
           them and re-arms (heartbeat_healthy);
- the global entity logs every death on the board.
"""
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, REPO)
from hamtools.ham import *  # noqa: E402,F403

WORKER = """
import sys, time
from hamtools.ham import ham_attach_self, ham_heartbeat
ham_attach_self("worker", 200_000_000, 2, 4, 0)
while True:
    for _ in range(15):
        ham_heartbeat()
        time.sleep(0.2)
    time.sleep(1.2)
"""


def main() -> int:
    ham_connect(0)
    anyone = ham_entity_handle(ND_LOCAL_NODE, None, 0)
    ham_action_log(ham_condition(anyone, CONDDEATH, "board", HREARMAFTERRESTART), "note",
                   "a process on the board died", 1, 1, HREARMAFTERRESTART)
    for name, line in (("steady", "/bin/sleep 100000"),
                       ("flaky", "/bin/sh -c 'sleep 2; kill -SEGV $$'")):
        ehdl = ham_attach(name, ND_LOCAL_NODE, -1, line, 0)
        death = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
        ham_action_restart(death, "restart", line, HREARMAFTERRESTART)
    worker = ham_entity("worker", ND_LOCAL_NODE, 0)  # a placeholder until it attaches itself
    for ctype, cname in ((CONDHBEATMISSEDLOW, "late"), (CONDHBEATMISSEDHIGH, "hung")):
        cond = ham_condition(worker, ctype, cname, HREARMAFTERRESTART)
        ham_action_log(cond, "say", f"worker missed heartbeats ({cname})", 1, 1, HREARMAFTERRESTART)
        if ctype == CONDHBEATMISSEDHIGH:
            ham_action_heartbeat_healthy(cond, "rearm", HREARMAFTERRESTART)
    ham_disconnect(0)
    subprocess.Popen([sys.executable, "-c", WORKER], env=dict(os.environ, PYTHONPATH=REPO),
                     start_new_session=True, stdin=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
