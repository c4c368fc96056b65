"""Wait for a path to appear, on an event loop, without polling: inotify(7) on the path's
deepest existing ancestor, moved one level down each time a component appears (a waitfor's
path may be several directories below anything that exists yet).

Python has no inotify binding; the three calls go through core.libc. Where inotify does not
work (no kernel support, the instance limit reached, a filesystem that sends no events for
remote changes) PathWatch raises OSError and the caller polls instead.
"""

import os
import struct

from hamtools.core import libc

IN_MOVED_TO, IN_CREATE, IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED = 0x80, 0x100, 0x400, 0x800, 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_EVENT = struct.Struct("=iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR


class PathWatch:
    """Calls appeared() once path exists (at once if it does); close() stops watching."""

    def __init__(self, loop, path: str, appeared):
        if "\0" in path:
            raise ValueError("a path cannot hold NUL")
        self.loop = loop
        self.path = os.path.abspath(path)
        self.appeared = appeared
        self.fd = libc.call("inotify_init1", IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError("inotify_init1 failed")
        self.wd, self.watched = -1, None
        try:
            self._arm()
        except OSError:
            self.close()
            raise
        self.loop.add_reader(self.fd, self._events)
        self._check()

    def _arm(self) -> None:
        """Watch the deepest ancestor of path that exists now (unless it is watched already:
        removing a watch queues an event of its own)."""
        ancestor = os.path.dirname(self.path)
        while not os.path.isdir(ancestor):
            ancestor = os.path.dirname(ancestor)
        if ancestor == self.watched:
            return
        if self.wd >= 0:
            libc.call("inotify_rm_watch", self.fd, self.wd)
        self.watched = ancestor
        self.wd = libc.call("inotify_add_watch", self.fd, os.fsencode(ancestor), _MASK)
        if self.wd < 0:
            raise OSError(f"inotify_add_watch {ancestor} failed")

    def _events(self) -> None:
        try:
            while data := os.read(self.fd, 65536):
                at = 0
                while at + _EVENT.size <= len(data):
                    _, mask, _, length = _EVENT.unpack_from(data, at)
                    at += _EVENT.size + length
                    if mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED):
                        self.wd, self.watched = -1, None  # that watch is gone: arm anew
        except BlockingIOError:
            pass
        if not self._check():
            self._arm()  # a component appeared (or our directory went): one level further
            self._check()  # it may have appeared between the event and the new watch

    def _check(self) -> bool:
        if self.fd < 0 or not os.path.lexists(self.path):
            return False
        self.close()
        self.appeared()
        return True

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
