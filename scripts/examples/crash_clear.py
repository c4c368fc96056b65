#!/usr/bin/env python3
"""Seed 002 §10, the product design: a module that crashes is restarted and its crash.sh runs
(tell the middleware to stop what the module was doing); if the restart fails, its clear.sh
runs (fall back to the previous source/UI). ham's journal keeps time, module, failure and the
cumulative count (`hamctl events`), and a log action says so in ham's log.

    scripts/examples/crash_clear.py MODULE_DIR COMMAND...
MODULE_DIR holds crash.sh and clear.sh (either may be missing: then nothing is run for it);
the entity is named after MODULE_DIR.
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from hamtools.ham import *  # noqa: E402,F403


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    module_dir, line = os.path.abspath(argv[1]), shlex.join(argv[2:])
    module = os.path.basename(module_dir)
    crash, clear = os.path.join(module_dir, "crash.sh"), os.path.join(module_dir, "clear.sh")
    ham_connect(0)
    ehdl = ham_attach(module, ND_LOCAL_NODE, -1, line, HENTITYKEEPONDEATH)
    chdl = ham_condition(ehdl, CONDDEATH, "crash", HREARMAFTERRESTART)
    restart = ham_action_restart(chdl, "restart", line, HREARMAFTERRESTART | HACTIONKEEPONFAIL)
    if os.path.exists(clear):
        ham_action_fail_execute(restart, "clear", f"/bin/sh {shlex.quote(clear)} {shlex.quote(module)}", 0)
    ham_action_fail_log(restart, "restartfailed", f"{module}: restart failed", 1, 0, 0)
    if os.path.exists(crash):
        ham_action_execute(chdl, "crashscript", f"/bin/sh {shlex.quote(crash)} {shlex.quote(module)}",
                           HREARMAFTERRESTART | HACTIONKEEPONFAIL)
    ham_action_log(chdl, "record", f"{module} crashed", 1, 0, HREARMAFTERRESTART)
    ham_disconnect(0)
    print(f"{module}: monitored (crash.sh {'yes' if os.path.exists(crash) else 'no'}, "
          f"clear.sh {'yes' if os.path.exists(clear) else 'no'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
