"""libc calls that Python's standard library lacks and that take only integers and strings
(prctl, malloc_trim), made through _ctypes directly.

The ctypes package builds its whole type zoo when imported: a quarter of a megabyte resident
in the daemon, whose size is budgeted against a bare pidfd loop. _ctypes passes an int as a C
int and bytes as a char pointer by itself. errno is not captured this way; callers get the C
return value.
"""

import _ctypes

_LIBC = _ctypes.dlopen(None)


def call(name: str, *args: int | bytes) -> int:
    return _ctypes.call_function(_ctypes.dlsym(_LIBC, name), args)
