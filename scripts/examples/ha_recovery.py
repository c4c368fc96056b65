#!/usr/bin/env python3
"""QNX's libha recovery example (System Architecture, "Recovery example"), ported line by line:
a client reads a file across a network filesystem; the filesystem's server dies, ham restarts
it and the mounts come back; the client's fd is stale, and its next read recovers in
recover_conn: ha_reopen under the same fd number, lseek to the checkpointed offset, and the
read is sent again.

    scripts/examples/ha_recovery.py [TESTFILE] [--sleep SECONDS]

The sleep (QNX's 18 s) is when the server is to be killed; a line on stdin ends it early. The
server side here: scripts/examples/fs_server.py (QNX's fs-nfs3) run and restarted by ham,
e.g. through nfs_monitor.py. Beyond the original, it prints what each read returned.
"""
import argparse
import os
import select
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
from hamtools.ha import ha_close, ha_dup, ha_open, ha_reopen, read

TESTFILE = "/net/machine99/home/test/testfile"


class Handle:
    def __init__(self):
        self.nr = 0
        self.curr_offset = 0


def recover_conn(oldfd, hdl):
    try:
        newfd = ha_reopen(oldfd, TESTFILE, os.O_RDONLY)
    except OSError:
        return -1
    # adjust file offset to previously known point
    os.lseek(newfd, hdl.curr_offset, os.SEEK_SET)
    # increment our count of successful recoveries
    hdl.nr += 1
    return newfd


def checkpointed_read(fd, hdl) -> None:
    """read() 15 bytes and move the checkpoint past them (the original repeats these lines)."""
    buf = read(fd, 15)
    hdl.curr_offset += len(buf)
    print(f"read {buf!r}", flush=True)


def sleep(seconds: float) -> None:
    """sleep(), which a line on stdin ends early (its end of file does not)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sys.stdin], [], [], left)
        if ready and sys.stdin.readline():
            return
        if ready:
            time.sleep(max(0.0, deadline - time.monotonic()))


def main(argv):
    global TESTFILE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("testfile", nargs="?", default=TESTFILE)
    parser.add_argument("--sleep", type=float, default=18)
    args = parser.parse_args(argv[1:])
    TESTFILE = args.testfile
    hdl = Handle()
    # open a connection
    # recovery will be using "recover_conn", and "hdl" will
    # be passed to it as a parameter
    try:
        fd = ha_open(TESTFILE, os.O_RDONLY, recover_conn, hdl, 0)
    except OSError:
        print("could not open file")
        return 255
    try:
        checkpointed_read(fd, hdl)
    except OSError as err:
        print(f"error: {err.strerror}")
        return 255
    fd2 = ha_dup(fd)
    # fs-nfs3 fails, and is restarted, the network mounts
    # are re-instated at this point.
    # Our previous fd to the file is stale
    sleep(args.sleep)
    # reading from dup-ped fd
    # will fail, and will recover via recover_conn
    try:
        checkpointed_read(fd2, hdl)
    except OSError as err:
        print(f"error: {err.strerror}")
        return 255
    print(f"total recoveries, {hdl.nr}")
    ha_close(fd)
    ha_close(fd2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
