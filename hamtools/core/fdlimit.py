"""ham's own descriptor limit, raised at start-up, and the one its children get back.

A soft RLIMIT_NOFILE of 1,024 (what most inits give) is less than ham's peers alone may take
(hamd.server admits 1,088), before a pidfd and capture pipes per entity; the hard limit is
there to be raised to. What ham starts must not see ham's limit, though: a program may
select() or close every fd up to its limit. So every start (posix_spawn, fork+exec, a re-exec
of ham itself) runs with the limit ham was given, as systemd does for its services.

resource is imported only by a process that raises its limit (ham): sockmon and the guardian
start processes through core.proc too, and carry nothing for it.
"""

CEILING = 65536  # enough for thousands of entities; a bigger table is memory nobody asked for
_given: tuple[int, int] | None = None  # (soft, hard) as ham was started, once it has raised them
_raised: tuple[int, int] | None = None  # ... and as ham raised them


def raise_own() -> tuple[int, int]:
    """Raise this process's soft limit towards its hard one; returns (given soft, soft now)."""
    global _given, _raised
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if want <= soft:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError):  # a hard limit above the kernel's nr_open
        return soft, soft
    _given, _raised = (soft, hard), (want, hard)
    return soft, want


def give_back() -> None:
    """Set the limit ham was given (in a child, between fork and exec)."""
    if _given is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, _given)


def as_given(call, *args, **kwargs):
    """call(*args, **kwargs) under the limit ham was given (posix_spawn and exec keep it);
    ham's descriptors above it stay open, only new ones would be refused meanwhile."""
    if _given is None:
        return call(*args, **kwargs)
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, _given)
    try:
        return call(*args, **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, _raised)
