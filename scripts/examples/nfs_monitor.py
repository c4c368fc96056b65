#!/usr/bin/env python3
"""Seed 002 §8.2, ported line by line: restart fs-nfs2 when it dies, then wait and remount
(restart + waitfor + execute chain; the mounts also run once at once, HACTIONDONOW).

    scripts/examples/nfs_monitor.py [--line CMD] [--mount1 CMD] [--mount2 CMD] [--delay MS]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from hamtools.ham import *  # noqa: E402,F403


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--line", default="/usr/sbin/fs-nfs2")
    parser.add_argument("--mount1", default="/bin/mount -t nfs a.b.c.d:/dir1 /dir1")
    parser.add_argument("--mount2", default="/bin/mount -t nfs a.b.c.d:/dir2 /dir2")
    parser.add_argument("--delay", type=int, default=2000, help="each waitfor, ms (seed: 2000)")
    args = parser.parse_args(argv[1:])
    fsnfspath = args.line
    fsnfs2pid = -1
    ham_connect(0)
    try:
        ehdl = ham_attach("Fs-nfs2", ND_LOCAL_NODE, fsnfs2pid, fsnfspath, 0)
        chdl = ham_condition(ehdl, CONDDEATH, "Death", HREARMAFTERRESTART)
    except OSError as err:
        print(f"add entity/condition failed: {err.strerror}")
        return 1
    steps = [
        lambda: ham_action_restart(chdl, "Restart", fsnfspath, HREARMAFTERRESTART),
        lambda: ham_action_waitfor(chdl, "Delay1", None, args.delay, HREARMAFTERRESTART),
        lambda: ham_action_execute(chdl, "MountDir1", args.mount1, HREARMAFTERRESTART | HACTIONDONOW),
        lambda: ham_action_waitfor(chdl, "Delay2", None, args.delay, HREARMAFTERRESTART),
        lambda: ham_action_execute(chdl, "Mountdir2", args.mount2, HREARMAFTERRESTART | HACTIONDONOW),
    ]
    for step in steps:
        try:
            step()
        except OSError as err:
            print(f"add action failed: {err.strerror}")
    ham_disconnect(0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
