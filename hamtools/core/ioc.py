"""Linux ioctl request numbers: the _IOC() macros, for the architecture we run on.

    request = direction << dir_shift | size << 16 | type << 8 | nr

Where the direction field sits and what READ/WRITE are worth depends on the architecture
(include/uapi/asm-generic/ioctl.h and arch/*/include/uapi/asm/ioctl.h), so numbers copied from
an x86 header are wrong on a MIPS or PowerPC board:

    generic (x86, arm, arm64, riscv, ...)  2 direction bits at 30, 14 size bits; READ 2, WRITE 1
    mips, powerpc, sparc, alpha            3 direction bits at 29, 13 size bits; NONE 1, READ 2, WRITE 4
    parisc                                 the generic layout with READ 1, WRITE 2
"""

import os


class Layout:
    __slots__ = ("name", "size_bits", "none", "read", "write")

    def __init__(self, name: str, size_bits: int, none: int, read: int, write: int):
        self.name, self.size_bits = name, size_bits
        self.none, self.read, self.write = none, read, write

    def __repr__(self) -> str:
        return f"ioc.Layout({self.name})"


GENERIC = Layout("generic", 14, none=0, read=2, write=1)
THREE_BIT_DIR = Layout("mips/powerpc/sparc/alpha", 13, none=1, read=2, write=4)
PARISC = Layout("parisc", 14, none=0, read=1, write=2)


def layout_for(machine: str) -> Layout:
    """The layout for a `uname -m` name (mips64el, ppc64le, sparc64, alpha, parisc64, ...)."""
    if machine.startswith(("mips", "ppc", "powerpc", "sparc", "alpha")):
        return THREE_BIT_DIR
    if machine.startswith("parisc"):
        return PARISC
    return GENERIC


NATIVE = layout_for(os.uname().machine)


def _ioc(layout: Layout, direction: int, type_: int | str, nr: int, size: int) -> int:
    if isinstance(type_, str):
        type_ = ord(type_)
    if not 0 <= size < 1 << layout.size_bits:
        raise ValueError(f"ioctl argument size {size} does not fit {layout.size_bits} bits")
    return direction << (16 + layout.size_bits) | size << 16 | type_ << 8 | nr


def io(type_: int | str, nr: int, layout: Layout = NATIVE) -> int:
    return _ioc(layout, layout.none, type_, nr, 0)


def ior(type_: int | str, nr: int, size: int, layout: Layout = NATIVE) -> int:
    return _ioc(layout, layout.read, type_, nr, size)


def iow(type_: int | str, nr: int, size: int, layout: Layout = NATIVE) -> int:
    return _ioc(layout, layout.write, type_, nr, size)


def iowr(type_: int | str, nr: int, size: int, layout: Layout = NATIVE) -> int:
    return _ioc(layout, layout.read | layout.write, type_, nr, size)
