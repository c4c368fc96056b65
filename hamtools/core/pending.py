"""The honest stand-in for an applet (or a form of one) that is specified but not built yet.

`--help` prints the specified interface and says plainly that it is not built; any other
invocation fails with a one-line error. No fake behaviour.
"""

import sys

from hamtools.core.errors import AppletError


def pending_main(prog: str, usage: str, argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        sys.stdout.write(usage)
        sys.stdout.write(f"\nStatus: {prog} is specified above but not built yet in this version.\n")
        return 0
    raise AppletError("not built yet in this version (see `hamtools --help " + prog + "`)")
