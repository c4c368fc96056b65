"""Entry of the built zipapp (its __main__.py calls main): everything runs from the zip.

Applets import straight from the zip (scripts/build adds .pyc files for that), so `hamtools
heartbeat NAME` costs little more than the interpreter's own start. An applet marked native
in the registry (it imports psutil's C extension, which cannot load from a zip) first gets
the zip's native packages extracted to disk, once per build (hamtools.zipextract), ahead of
the zip on sys.path; the rest still comes from the zip.
"""

import sys

from hamtools import multicall


def main(zip_path: str) -> None:
    applet = multicall.target_applet(sys.argv)
    if applet is not None and applet.native:
        from hamtools import zipextract

        try:
            sys.path.insert(0, zipextract.native_site(zip_path))
        except OSError as err:
            sys.stderr.write(f"{applet.name}: cannot extract {', '.join(zipextract.native_packages(zip_path))} "
                             f"to {zipextract.shiv_root()}: {err.strerror} (set SHIV_ROOT to a "
                             "writable directory, or prepare one with hamtools --extract DIR)\n")
            sys.exit(1)
    sys.exit(multicall.main())
