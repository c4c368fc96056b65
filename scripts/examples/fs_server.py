#!/usr/bin/env python3
"""The network filesystem server of the libha recovery example (QNX's fs-nfs3), shrunk to what
the example needs: a read-only FUSE filesystem showing one file, SOURCE, at MOUNTPOINT.

    scripts/examples/fs_server.py MOUNTPOINT SOURCE        (root; /dev/fuse)

Like an NFS client's server, it can die: the kernel then fails every operation on its files
with ENOTCONN, and the files its clients had open are stale for good. When ham restarts it,
it first detaches the dead mount left by the incarnation that was killed and mounts afresh
(QNX: "the network mounts are re-instated"). Reads go to the server every time (direct I/O),
as they go over the network in the original. Pure Python: the kernel's FUSE protocol, the
few requests a reader makes.
"""
import ctypes
import errno
import os
import signal
import stat
import struct
import sys

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, -errno, unique
ATTR = struct.Struct("<6Q10I")  # ino size blocks atime mtime ctime, nsecs x3, mode nlink uid gid rdev blksize flags
INIT_OUT = struct.Struct("<4I2H2I2HI7I")
READ_IN = struct.Struct("<QQI")  # fh, offset, size
DIRENT = struct.Struct("<QQII")  # ino, next offset, name length, type

LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE, FLUSH = 1, 2, 3, 14, 15, 18, 25
INIT, OPENDIR, READDIR, RELEASEDIR, INTERRUPT, DESTROY, BATCH_FORGET = 26, 27, 28, 29, 36, 38, 42
NO_REPLY = (FORGET, INTERRUPT, BATCH_FORGET)
FOPEN_DIRECT_IO = 1
MS_NOSUID, MS_NODEV, MNT_DETACH = 2, 4, 2
ROOT, FILE = 1, 2

libc = ctypes.CDLL(None, use_errno=True)


class Server:
    def __init__(self, mountpoint: str, source: str):
        self.mountpoint, self.source = mountpoint, source
        self.name = os.path.basename(source).encode()

    def attr(self, node: int) -> bytes:
        if node == ROOT:
            return ATTR.pack(ROOT, 0, 0, 0, 0, 0, 0, 0, 0, stat.S_IFDIR | 0o555, 2, 0, 0, 0, 4096, 0)
        info = os.stat(self.source)
        when = int(info.st_mtime)
        return ATTR.pack(FILE, info.st_size, (info.st_size + 511) // 512, when, when, when, 0, 0, 0,
                         stat.S_IFREG | 0o444, 1, 0, 0, 0, 4096, 0)

    def handle(self, opcode: int, node: int, body: bytes) -> bytes | int:
        """The reply's payload, or an errno."""
        if opcode == INIT:
            _, minor, readahead = struct.unpack_from("<3I", body)
            return INIT_OUT.pack(7, min(minor, 31), readahead, 0, 16, 12, 65536, 1, 0, 0, 0, *[0] * 7)
        if opcode == GETATTR:
            return struct.pack("<QII", 0, 0, 0) + self.attr(node)
        if opcode == LOOKUP:
            if node != ROOT or body.rstrip(b"\0") != self.name:
                return errno.ENOENT
            return struct.pack("<QQQQII", FILE, 0, 0, 0, 0, 0) + self.attr(FILE)
        if opcode in (OPEN, OPENDIR):
            return struct.pack("<QII", 0, FOPEN_DIRECT_IO if opcode == OPEN else 0, 0)
        if opcode == READ:
            _, offset, size = READ_IN.unpack_from(body)
            with open(self.source, "rb") as source:
                source.seek(offset)
                return source.read(size)
        if opcode == READDIR:
            _, offset, size = READ_IN.unpack_from(body)
            entries = [(ROOT, b"."), (ROOT, b".."), (FILE, self.name)][offset:]
            out = b""
            for index, (ino, name) in enumerate(entries, offset + 1):
                entry = DIRENT.pack(ino, index, len(name), 4 if ino == ROOT else 8) + name
                entry += b"\0" * (-len(entry) % 8)
                if len(out) + len(entry) > size:
                    break
                out += entry
            return out
        if opcode in (RELEASE, RELEASEDIR, FLUSH, DESTROY):
            return b""
        return errno.ENOSYS

    def mount(self) -> int:
        libc.umount2(self.mountpoint.encode(), MNT_DETACH)  # a killed predecessor's dead mount
        fd = os.open("/dev/fuse", os.O_RDWR)
        options = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if libc.mount(b"hamtools-fs", self.mountpoint.encode(), b"fuse.hamtools-fs",
                      MS_NOSUID | MS_NODEV, options) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {self.mountpoint}: {os.strerror(err)}")
        return fd

    def serve(self, fd: int) -> None:
        while True:
            try:
                request = os.read(fd, 1 << 17)
            except OSError as err:
                if err.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    continue  # an interrupted request: the kernel dropped it
                if err.errno == errno.ENODEV:
                    return  # unmounted
                raise
            _, opcode, unique, node, *_ = IN_HEADER.unpack_from(request)
            if opcode in NO_REPLY:
                continue
            answer = self.handle(opcode, node, request[IN_HEADER.size:])
            error, payload = (-answer, b"") if isinstance(answer, int) else (0, answer)
            try:
                os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), error, unique) + payload)
            except FileNotFoundError:
                pass  # the request was interrupted meanwhile
            if opcode == DESTROY:
                return


def main(argv) -> int:
    if len(argv) != 3:
        print(__doc__.strip().split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    server = Server(os.path.abspath(argv[1]), os.path.abspath(argv[2]))
    try:
        fd = server.mount()
    except OSError as err:
        print(f"fs_server: {err.strerror}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: libc.umount2(server.mountpoint.encode(), MNT_DETACH))
    print(f"fs_server: {server.mountpoint}/{server.name.decode()} served", flush=True)
    server.serve(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
