"""The zipapp's native packages on disk: no extension module loads from inside a zip, so an
applet that needs one (sockmon's `name:` targets import psutil) runs with them extracted.

Only the top-level packages of site-packages that hold an extension module (.so) are
extracted, with bytecode; everything else keeps running from the zip. They go to
$SHIV_ROOT/hamtools_<build id>/site-packages (SHIV_ROOT defaults to ~/.shiv, the build id is
shiv's, from the zip's environment.json), whatever name the zipapp runs under, so its links
share one copy per build. The first import of one extracts them (hamtools.zipentry; to a
temporary directory renamed into place: concurrent first runs cannot clash); `hamtools
--extract DIR` does it ahead of time, so that with SHIV_ROOT=DIR on a read-only root nothing
is written at run time.
"""

import os
import zipfile
from pathlib import Path

from hamtools.core import cjson


def shiv_root() -> str:
    return os.environ.get("SHIV_ROOT") or os.path.expanduser("~/.shiv")


def native_site(zip_path: str, root: str | None = None) -> str:
    """The extracted site-packages of the zipapp at zip_path under root (default SHIV_ROOT),
    extracting it first if need be. Raises OSError when it cannot be written."""
    with zipfile.ZipFile(zip_path) as archive:
        target = _target(archive, root or shiv_root())
        if not target.is_dir():
            _extract(archive, target)
    return str(target / "site-packages")


def native_packages(zip_path: str) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return sorted(_native_tops(archive))


def _target(archive: zipfile.ZipFile, root: str) -> Path:
    build_id = cjson.loads(archive.read("environment.json"))["build_id"]
    return Path(root) / f"hamtools_{build_id}"


def _native_tops(archive: zipfile.ZipFile) -> set[str]:
    """site-packages' top-level names (psutil, psutil.libs...) that carry an extension module."""
    return {name.split("/")[1] for name in archive.namelist()
            if name.startswith("site-packages/") and name.endswith(".so")}


def _extract(archive: zipfile.ZipFile, target: Path) -> None:
    import compileall  # here: a run that finds the extracted copy needs none of these
    import py_compile
    import shutil

    tops = _native_tops(archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for info in archive.infolist():
            parts = info.filename.split("/")
            # The zip's own .pyc files sit beside their sources, where only zipimport looks.
            if parts[0] == "site-packages" and len(parts) > 1 and parts[1] in tops \
                    and not info.is_dir() and not info.filename.endswith(".pyc"):
                path = archive.extract(info, staging)
                os.chmod(path, (info.external_attr >> 16) & 0o777 or 0o644)
        # Bytecode now, by this interpreter: a read-only copy could never cache its own.
        compileall.compile_dir(staging, quiet=2, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():  # else another process put its copy there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
