#!/usr/bin/env python3
"""Seed 002 §8.1, ported line by line: start inetd under ham and restart it when it dies.

    scripts/examples/inetd_monitor.py ["/usr/sbin/inetd -D"]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from hamtools.ham import *  # noqa: E402,F403


def main(argv):
    inetdpath = argv[1] if len(argv) > 1 else "/usr/sbin/inetd -D"
    inetdpid = -1
    ham_connect(0)
    try:
        ehdl = ham_attach("inetd", ND_LOCAL_NODE, inetdpid, inetdpath, 0)
    except OSError as err:
        print(f"add entity failed: {err.strerror}")
        return 1
    try:
        chdl = ham_condition(ehdl, CONDDEATH, "death", HREARMAFTERRESTART)
    except OSError as err:
        print(f"add condition failed: {err.strerror}")
        return 1
    try:
        ham_action_restart(chdl, "restart", inetdpath, HREARMAFTERRESTART)
    except OSError as err:
        print(f"add action failed: {err.strerror}")
        return 1
    ham_disconnect(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
