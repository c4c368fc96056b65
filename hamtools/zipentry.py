"""Entry of the built zipapp (its __main__.py calls main): the hot path skips shiv.

Pure-Python applets import straight from the zip (scripts/build adds .pyc files for that),
so `hamtools heartbeat NAME` costs little more than the interpreter's own start. An applet
marked native in the registry (it imports psutil's C extension) goes through shiv's
bootstrap, which extracts site-packages once into SHIV_ROOT (default ~/.shiv) and reuses it.
"""

import sys

from hamtools import multicall


def main(zip_path: str) -> None:
    applet = multicall.target_applet(sys.argv)
    if applet is None or not applet.native:
        sys.exit(multicall.main())
    # Forget the copies imported from the zip so the extracted tree serves everything.
    sys.path.remove(zip_path + "/site-packages")
    for name in [m for m in sys.modules if m == "hamtools" or m.startswith("hamtools.")]:
        del sys.modules[name]
    import _bootstrap  # shiv's, at the zip's root

    _bootstrap.bootstrap()
