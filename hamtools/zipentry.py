"""Entry of the built zipapp (its __main__.py calls main): everything runs from the zip.

Applets import straight from the zip (scripts/build adds .pyc files for that), so `hamtools
heartbeat NAME` costs little more than the interpreter's own start. psutil's C extension
cannot load from a zip: for an applet marked native in the registry (sockmon), the first
import of a native package extracts them to disk, once per build (hamtools.zipextract), and
puts them ahead of the zip on sys.path; the rest still comes from the zip. Nothing is
extracted until that import, so `sockmon --help` and its unix:, tcp: and pid: targets work
where nothing can be written.
"""

import sys

from hamtools import multicall


class ExtractOnImport:
    """A meta-path finder that extracts the zip's native packages when one is first imported.
    A failure is an ImportError saying what to do (the importer reports it in one line)."""

    def __init__(self, zip_path: str):
        from hamtools import zipextract

        self.zip_path = zip_path
        self.native = set(zipextract.native_packages(zip_path))

    def find_spec(self, name: str, path=None, target=None):
        if name not in self.native:
            return  # not ours: the next finder's
        from hamtools import zipextract

        try:
            site = zipextract.native_site(self.zip_path)
        except OSError as err:
            raise ImportError(f"cannot extract {name} to {zipextract.shiv_root()}: {err.strerror} (set SHIV_ROOT "
                              "to a writable directory, or prepare one with hamtools --extract DIR)") from None
        sys.meta_path.remove(self)
        sys.path.insert(0, site)
        return  # the path finder now finds it there, ahead of the zip


def main(zip_path: str) -> None:
    applet = multicall.target_applet(sys.argv)
    if applet is not None and applet.native:
        sys.meta_path.insert(0, ExtractOnImport(zip_path))
    sys.exit(multicall.main())
