"""The physical limit for a Python supervisor: posix_spawn N children, respawn each the moment
its pidfd says it died. No logging, no state, no throttle."""
import os
import select
import sys

argv = sys.argv[2:]
count = int(sys.argv[1])
poller = select.poll()
children = {}


def start():
    pid = os.posix_spawn(argv[0], argv, os.environ, setsigmask=())
    fd = os.pidfd_open(pid)
    children[fd] = pid
    poller.register(fd, select.POLLIN)


for _ in range(count):
    start()
while True:
    for fd, _ in poller.poll():
        poller.unregister(fd)
        os.waitpid(children.pop(fd), 0)
        os.close(fd)
        start()
