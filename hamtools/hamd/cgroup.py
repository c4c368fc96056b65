"""cgroup v2 groups for services: <root>/hamtools/<name>, made and configured by ham.

ham (the parent) creates the group and writes its settings ({"memory.max": "64M"} writes
"64M" to memory.max), enabling the controllers they need on the way down; the child joins it
between fork and exec, before anything else, so everything it ever starts is inside.

Where no cgroup v2 hierarchy is mounted writable (cgroup v1 only, a read-only /sys/fs/cgroup
in a container, ham not root) ham says so once and starts services without their group; a
setting the kernel refuses is logged and skipped. A cgroup never fails a service.
"""

import os

MOUNTS = "/proc/self/mounts"
UNIFIED = "/sys/fs/cgroup"
SUBTREE = "hamtools"


def find_root(mounts: str = MOUNTS) -> str | None:
    """Where cgroup v2 is mounted: /sys/fs/cgroup when unified, …/unified on hybrid systems."""
    try:
        with open(mounts) as table:
            points = [fields[1] for fields in map(str.split, table)
                      if len(fields) > 2 and fields[2] == "cgroup2"]
    except OSError:
        return None
    if UNIFIED in points:
        return UNIFIED
    return points[0] if points else None


class Hierarchy:
    """ham's subtree of the cgroup v2 hierarchy (probed on first use)."""

    def __init__(self, log, root: str | None = None):
        self.log = log  # log(level, message), ham's activity log
        self._root = root
        self._base: str | None = None
        self._probed = False

    def base(self) -> str | None:
        """<root>/hamtools, or None (said once) when there is no writable cgroup v2."""
        if not self._probed:
            self._probed = True
            root = self._root or find_root()
            why = "no cgroup v2 hierarchy is mounted"
            if root is not None:
                try:
                    _mkdir(os.path.join(root, SUBTREE))
                    self._base = os.path.join(root, SUBTREE)
                except OSError as err:
                    why = f"{root} is not writable ({err.strerror})"
            if self._base is None:
                self.log(1, f"cgroup limits unavailable: {why}; services start without them")
        return self._base

    def prepare(self, name: str, settings: dict[str, str]) -> str | None:
        """The configured group for service name (its directory), or None to start without."""
        base = self.base()
        if base is None:
            return None
        if "/" in name or name.startswith("."):
            self.log(1, f"{name}: no cgroup for a name that is not a directory name")
            return None
        path = os.path.join(base, name)
        try:
            os.rmdir(path)  # an empty leftover: start again from the kernel's defaults
        except OSError:
            pass  # absent, or still holding processes (then it is reused as it is)
        try:
            _mkdir(path)
        except OSError as err:
            self.log(1, f"{name}: cannot create cgroup {path}: {err.strerror}; started without")
            return None
        controllers = {key.split(".", 1)[0] for key in settings} - {"cgroup"}
        for parent in (os.path.dirname(base), base):
            self._enable(parent, controllers)
        for key, value in settings.items():
            if not _write(os.path.join(path, key), str(value)):
                self.log(1, f"{name}: cgroup {key} = {value} refused; left at its default")
        return path

    def remove(self, name: str) -> None:
        """Drop service name's group once it holds no process (a removed entity)."""
        base = self.base()
        if base is not None:
            try:
                os.rmdir(os.path.join(base, name))
            except OSError:
                pass

    def _enable(self, parent: str, controllers: set[str]) -> None:
        # One write per controller: a single unavailable one must not block the others.
        for controller in sorted(controllers):
            _write(os.path.join(parent, "cgroup.subtree_control"), "+" + controller)


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except FileExistsError:
        pass


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as knob:
            knob.write(value)
        return True
    except OSError:
        return False
