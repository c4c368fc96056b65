"""Atomic files: write a temporary file, fsync it, rename it over the target, fsync the
directory. A reader (or a ham killed mid-write) sees the old content or the new, never a mix.
"""

import os


def write_atomic(path: str, data: bytes, mode: int = 0o644, durable: bool = True) -> None:
    """durable=False skips the fsyncs: readers still see the old content or the new, but a
    power cut may lose the new (for files that are rewritten often and matter little)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if not durable:
        return
    dirfd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def read_or_none(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
