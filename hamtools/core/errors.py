"""Exit codes (SPEC §1) and the one exception an applet raises to fail with a one-line message."""

EXIT_OK = 0
EXIT_FALSE = 1  # the checked condition is false / the operation failed
EXIT_USAGE = 2  # usage error
EXIT_NOT_RUNNING = 3  # the daemon is not running or the named object does not exist
EXIT_NOT_FOUND = 127  # unknown applet


class AppletError(Exception):
    """Printed by the dispatcher as `APPLET: message` on stderr; the applet exits with `code`.

    The message should read "what failed: why", e.g. "open /dev/watchdog0: device busy".
    """

    def __init__(self, message: str, code: int = EXIT_FALSE):
        super().__init__(message)
        self.code = code


def describe_oserror(err: OSError) -> str:
    """strerror in lower case, the way `APPLET: what failed: why` lines read."""
    text = err.strerror or str(err)
    return text[:1].lower() + text[1:]
